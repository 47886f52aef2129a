package forward

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testEmitter records chunks; with hold set, acks wait until release.
type testEmitter struct {
	mu      sync.Mutex
	chunks  []pipeline.Chunk
	events  int
	hold    bool
	pending []pipeline.AckFunc
	block   chan struct{} // when not nil, Emit waits for it to close
}

func (e *testEmitter) Emit(ctx context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	if e.block != nil {
		select {
		case <-e.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.mu.Lock()
	c.Entries = append([]byte(nil), c.Entries...)
	e.chunks = append(e.chunks, c)
	e.events += c.Count
	if e.hold {
		e.pending = append(e.pending, ack)
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	ack(nil)
	return nil
}

func (e *testEmitter) release() {
	e.mu.Lock()
	p := e.pending
	e.pending, e.hold = nil, false
	e.mu.Unlock()
	for _, a := range p {
		a(nil)
	}
}

func (e *testEmitter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.events
}

func (e *testEmitter) records(t *testing.T) []map[string]any {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []map[string]any
	for _, c := range e.chunks {
		err := mpack.ForEachEntry(c.Entries, func(_ mpack.EventTime, rec []byte) error {
			var m map[string]any
			if err := msgpack.Unmarshal(rec, &m); err != nil {
				return err
			}
			m["_tag"] = c.Tag
			out = append(out, m)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func startInput(t *testing.T, mod func(*Config), emit pipeline.Emitter) *Input {
	t.Helper()
	in, _ := startInputReg(t, mod, emit)
	return in
}

// startInputReg starts an input whose metrics are on the registry returned.
func startInputReg(t *testing.T, mod func(*Config), emit pipeline.Emitter) (*Input, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	set := pipeline.Settings{Name: "fwd", Type: "forward", DataDir: t.TempDir(), Logger: testLogger(t), Metrics: pipeline.NewMetrics(reg).Component(pipeline.KindInput, "fwd", "forward")}
	in, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), emit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Stop(context.Background()) })
	return in, reg
}

func dial(t *testing.T, in *Input) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", in.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mp(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAck reads one {"ack": id} answer with a deadline.
func readAck(t *testing.T, c net.Conn, d time.Duration) (string, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	dec := msgpack.NewDecoder(c)
	var m map[string]string
	if err := dec.Decode(&m); err != nil {
		return "", err
	}
	return m["ack"], nil
}

// TestFluentLoggerGolangRequestAck: the real Go client with RequestAck
// gets every post acknowledged, and every record arrives.
func TestFluentLoggerGolangRequestAck(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, nil, em)
	host, port, _ := net.SplitHostPort(in.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	for _, sub := range []bool{false, true} {
		lg, err := fluent.New(fluent.Config{FluentHost: host, FluentPort: p, RequestAck: true, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, SubSecondPrecision: sub, MaxRetry: 1})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			if err := lg.Post("app.golang", map[string]any{"i": i, "sub": sub}); err != nil {
				t.Fatalf("post %d: %v", i, err)
			}
		}
		lg.Close()
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := em.count(); n != 400 {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
	recs := em.records(t)
	if recs[0]["_tag"] != "app.golang" || fmt.Sprint(recs[0]["i"]) != "0" || fmt.Sprint(recs[399]["i"]) != "199" {
		t.Fatalf("first record %v", recs[0])
	}
}

// TestAckOnlyAfterDurable: no ack is sent before the pipeline acknowledges
// the chunk, and the ack carries the chunk id.
func TestAckOnlyAfterDurable(t *testing.T) {
	em := &testEmitter{hold: true}
	in := startInput(t, nil, em)
	c := dial(t, in)
	msg := mp(t, []any{"app.x", 1700000000, map[string]any{"k": "v"}, map[string]any{"chunk": "Y2h1bmstMQ=="}})
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 2*time.Second, func() error {
		if em.count() != 1 {
			return fmt.Errorf("not emitted yet")
		}
		return nil
	})
	if _, err := readAck(t, c, 200*time.Millisecond); err == nil {
		t.Fatal("ack sent before the chunk was durable")
	}
	em.release()
	id, err := readAck(t, c, 2*time.Second)
	if err != nil || id != "Y2h1bmstMQ==" {
		t.Fatalf("ack %q, %v", id, err)
	}
}

// TestNoChunkNoAnswer: a request without chunk gets no answer, the events
// still arrive.
func TestNoChunkNoAnswer(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, nil, em)
	c := dial(t, in)
	if _, err := c.Write(mp(t, []any{"app.x", 1, map[string]any{"a": 1}})); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 2*time.Second, func() error {
		if em.count() != 1 {
			return fmt.Errorf("not emitted")
		}
		return nil
	})
	if _, err := readAck(t, c, 200*time.Millisecond); err == nil {
		t.Fatal("answered a request without chunk")
	}
}

// TestMalformedClosesOnlyThatConnection: garbage closes its connection; a
// good client on another connection loses nothing.
func TestMalformedClosesOnlyThatConnection(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, func(c *Config) { c.MaxFrameBytes = 64 << 10; c.MaxDecompressedBytes = 64 << 10 }, em)
	good := dial(t, in)
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(good)
		for i := range 500 {
			id := fmt.Sprintf("id-%d", i)
			if _, err := good.Write(mp(t, []any{"good", 1, map[string]any{"i": i}, map[string]any{"chunk": id}})); err != nil {
				errc <- err
				return
			}
			_ = good.SetReadDeadline(time.Now().Add(5 * time.Second))
			var m map[string]string
			if err := msgpack.NewDecoder(r).Decode(&m); err != nil || m["ack"] != id {
				errc <- fmt.Errorf("ack %d: %v %v", i, m, err)
				return
			}
		}
	}()
	bad := [][]byte{
		{0xc1},                         // never-used byte
		{0x93, 0xa1, 'x', 0xc1},        // array with garbage
		{0x92, 0x01, 0x02},             // tag not a string
		{0xdb, 0xff, 0xff, 0xff, 0xff}, // a 4 GiB string header
		{0x93, 0xa1, 'x', 0xc6, 0x7f, 0xff, 0xff, 0xff}, // a 2 GiB bin claiming entries
		[]byte("[\"tag\", garbage]"),
	}
	for i, b := range bad {
		c := dial(t, in)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 16)
		if _, err := c.Read(buf); err == nil {
			t.Fatalf("bad frame %d: connection still answers", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("bad frame %d: connection not closed", i)
		}
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if n := em.count(); n != 500 {
		t.Fatalf("good client: %d of 500 events", n)
	}
}

// TestDedupAcrossRestart: a chunk id already stored is acked again without
// being stored twice, also after the input restarts on the same data_dir.
func TestDedupAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	em := &testEmitter{}
	mk := func() *Input {
		cfg := defaultConfig()
		cfg.Listen = "127.0.0.1:0"
		set := pipeline.Settings{Name: "fwd", DataDir: dir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "fwd")}
		in, err := New(set, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(context.Background(), em); err != nil {
			t.Fatal(err)
		}
		return in
	}
	send := func(in *Input, id string, i int) {
		c := dial(t, in)
		if _, err := c.Write(mp(t, []any{"t", 1, map[string]any{"i": i}, map[string]any{"chunk": id}})); err != nil {
			t.Fatal(err)
		}
		if got, err := readAck(t, c, 2*time.Second); err != nil || got != id {
			t.Fatalf("ack of %s: %q %v", id, got, err)
		}
	}
	in := mk()
	send(in, "A", 1)
	send(in, "A", 1)
	send(in, "B", 2)
	if err := in.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	in = mk()
	defer in.Stop(context.Background())
	send(in, "A", 1)
	send(in, "B", 2)
	send(in, "C", 3)
	if n := em.count(); n != 3 {
		t.Fatalf("stored %d events, want 3 (A, B, C once each)", n)
	}
}

// TestSharedKeyHandshake: the right key passes, a wrong one gets PONG false
// and the connection is closed without anything stored.
func TestSharedKeyHandshake(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, func(c *Config) { c.SharedKey = "s3cret"; c.SelfHostname = "server-host" }, em)
	for _, key := range []string{"s3cret", "wrong"} {
		c := dial(t, in)
		dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
		helo, err := dec.NextHelo()
		if err != nil {
			t.Fatal(err)
		}
		auth := forwardproto.ClientAuth{Hostname: "client-host", SharedKey: key}
		salt := forwardproto.NewSalt()
		ping, err := forwardproto.AppendPing(nil, helo, auth, salt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(ping); err != nil {
			t.Fatal(err)
		}
		pong, err := dec.NextPong()
		if err != nil {
			t.Fatal(err)
		}
		err = forwardproto.VerifyPong(pong, helo, auth, salt)
		if key == "wrong" {
			if err == nil {
				t.Fatal("wrong key accepted")
			}
			_, _ = c.Write(mp(t, []any{"t", 1, map[string]any{"x": 1}}))
			continue
		}
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if _, err := c.Write(mp(t, []any{"t", 1, map[string]any{"x": 1}, map[string]any{"chunk": "k1"}})); err != nil {
			t.Fatal(err)
		}
		if got, err := readAck(t, c, 2*time.Second); err != nil || got != "k1" {
			t.Fatalf("ack %q %v", got, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := em.count(); n != 1 {
		t.Fatalf("stored %d events, want 1", n)
	}
}

// TestTLSAndSourceAddress: TLS with a client certificate required, and the
// client's address added under source_address_key.
func TestTLSAndSourceAddress(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool, clientCert := makeCerts(t, dir)
	em := &testEmitter{}
	in := startInput(t, func(c *Config) {
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile = certFile, keyFile, certFile
		c.SourceAddressKey = "source"
	}, em)
	// Without a client certificate: refused.
	if c, err := tls.Dial("tcp", in.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost"}); err == nil {
		_, _ = c.Write(mp(t, []any{"t", 1, map[string]any{"x": 1}}))
		buf := make([]byte, 1)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err == nil {
			t.Fatal("connection without a client certificate answered")
		}
		c.Close()
	}
	c, err := tls.Dial("tcp", in.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{clientCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(mp(t, []any{"t", []any{[]any{1, map[string]any{"a": 1}}, []any{2, map[string]any{"a": 2}}}, map[string]any{"chunk": "tls1"}})); err != nil {
		t.Fatal(err)
	}
	if got, err := readAck(t, c, 2*time.Second); err != nil || got != "tls1" {
		t.Fatalf("ack %q %v", got, err)
	}
	recs := em.records(t)
	if len(recs) != 2 || recs[0]["source"] != "127.0.0.1" || fmt.Sprint(recs[1]["a"]) != "2" {
		t.Fatalf("records %v", recs)
	}
}

// TestUDPHeartbeat: a 0x00 datagram is answered with 0x00.
func TestUDPHeartbeat(t *testing.T) {
	in := startInput(t, nil, &testEmitter{})
	c, err := net.Dial("udp", in.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	n, err := c.Read(buf)
	if err != nil || n != 1 || buf[0] != 0 {
		t.Fatalf("heartbeat answer %x %v", buf[:n], err)
	}
}

// TestBackpressureLosesNothing: while the pipeline does not take chunks,
// the connection is not read; once it does, everything arrives.
func TestBackpressureLosesNothing(t *testing.T) {
	em := &testEmitter{block: make(chan struct{})}
	in := startInput(t, nil, em)
	c := dial(t, in)
	payload := make([]byte, 1000)
	done := make(chan error, 1)
	go func() {
		for i := range 5000 {
			if _, err := c.Write(mp(t, []any{"bp", 1, map[string]any{"i": i, "pad": payload}})); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		t.Fatalf("5 MB written while nothing was read: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(em.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := em.count(); n != 5000 {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
}

func makeCerts(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool, client tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pool, client
}

func testLogger(t *testing.T) *zap.Logger {
	if os.Getenv("FORWARD_TEST_LOG") != "" {
		l, _ := zap.NewDevelopment()
		return l
	}
	return zap.NewNop()
}

func testSettings(t *testing.T) pipeline.Settings {
	return pipeline.Settings{Name: "fwd", Type: "forward", DataDir: t.TempDir(), Logger: testLogger(t), Metrics: pipeline.NopMetrics(pipeline.KindInput, "fwd")}
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

var errEMFILE = syscall.EMFILE

// refusingEmitter refuses every chunk: permanently or not.
type refusingEmitter struct {
	err   error
	calls atomic.Int32
}

func (e *refusingEmitter) Emit(_ context.Context, _ pipeline.Chunk, ack pipeline.AckFunc) error {
	e.calls.Add(1)
	ack(e.err)
	return nil
}

// TestAckClassification: a chunk refused for good (a Permanent error from
// the pipeline) is dropped, counted and acknowledged, so the client does
// not resend it forever; a retryable refusal is not acknowledged, so the
// client resends. Before, every error left the chunk unacknowledged.
func TestAckClassification(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   error
		acked bool
	}{
		{"permanent", pipeline.Permanent(errors.New("filter refuses it")), true},
		{"retryable", errors.New("disk error"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			em := &refusingEmitter{err: c.err}
			in := startInput(t, nil, em)
			conn := dial(t, in)
			if _, err := conn.Write(mp(t, []any{"app.x", 1, map[string]any{"a": 1}, map[string]any{"chunk": "c1"}})); err != nil {
				t.Fatal(err)
			}
			id, err := readAck(t, conn, time.Second)
			if c.acked && (err != nil || id != "c1") {
				t.Fatalf("ack %q, %v; want c1", id, err)
			}
			if !c.acked && err == nil {
				t.Fatalf("acknowledged %q a chunk that was not stored", id)
			}
			if c.acked {
				// the resend is acked from the dedup window, not emitted again
				if _, err := conn.Write(mp(t, []any{"app.x", 1, map[string]any{"a": 1}, map[string]any{"chunk": "c1"}})); err != nil {
					t.Fatal(err)
				}
				if id, err := readAck(t, conn, time.Second); err != nil || id != "c1" {
					t.Fatalf("resend: ack %q, %v", id, err)
				}
				if n := em.calls.Load(); n != 1 {
					t.Fatalf("emitted %d times, want 1", n)
				}
			}
		})
	}
}

// TestSelfHostnameFromNodeName: the PONG's hostname defaults to the node's
// name (service.node_name), then the machine's; self_hostname wins.
func TestSelfHostnameFromNodeName(t *testing.T) {
	host, _ := os.Hostname()
	for _, c := range []struct{ node, self, want string }{
		{"node-7", "", "node-7"},
		{"node-7", "mine", "mine"},
		{"", "", host},
	} {
		cfg := defaultConfig()
		cfg.SelfHostname = c.self
		in, err := New(pipeline.Settings{Name: "fwd", NodeName: c.node, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "fwd")}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if in.cfg.SelfHostname != c.want {
			t.Fatalf("node %q, self_hostname %q: PONG hostname %q, want %q", c.node, c.self, in.cfg.SelfHostname, c.want)
		}
	}
}
