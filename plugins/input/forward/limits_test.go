package forward

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/plugins/forwardproto"
)

// metricValue sums the samples of a metric family whose labels include
// want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				total += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				total += g.GetValue()
			}
		}
	}
	return total
}

// goodClient sends n Message requests with chunk ids on its own connection,
// each waiting for its ack; the error channel gets nil when all were acked.
func goodClient(t *testing.T, in *Input, tag string, n int) <-chan error {
	t.Helper()
	return goodClientKey(t, in, tag, n, "")
}

// goodClientKey is goodClient passing the shared-key handshake first when
// key is set.
func goodClientKey(t *testing.T, in *Input, tag string, n int, key string) <-chan error {
	t.Helper()
	c := dial(t, in)
	errc := make(chan error, 1)
	go func() {
		if key != "" {
			dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
			helo, err := dec.NextHelo()
			if err != nil {
				errc <- err
				return
			}
			auth := forwardproto.ClientAuth{Hostname: "good-client", SharedKey: key}
			salt := forwardproto.NewSalt()
			ping, _ := forwardproto.AppendPing(nil, helo, auth, salt)
			if _, err := c.Write(ping); err != nil {
				errc <- err
				return
			}
			pong, err := dec.NextPong()
			if err == nil {
				err = forwardproto.VerifyPong(pong, helo, auth, salt)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		r := bufio.NewReader(c)
		dec := msgpack.NewDecoder(r)
		for i := range n {
			id := fmt.Sprintf("%s-%d", tag, i)
			b, _ := msgpack.Marshal([]any{tag, 1700000000, map[string]any{"i": i}, map[string]any{"chunk": id}})
			if _, err := c.Write(b); err != nil {
				errc <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var m map[string]string
			if err := dec.Decode(&m); err != nil || m["ack"] != id {
				errc <- fmt.Errorf("ack %d: %v %v", i, m, err)
				return
			}
		}
		errc <- nil
	}()
	return errc
}

// tagCount counts the stored events of one tag.
func (e *testEmitter) tagCount(tag string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.chunks {
		if c.Tag == tag {
			n += c.Count
		}
	}
	return n
}

func waitGood(t *testing.T, em *testEmitter, errc <-chan error, tag string, n int) {
	t.Helper()
	if err := <-errc; err != nil {
		t.Fatalf("good client: %v", err)
	}
	if got := em.tagCount(tag); got != n {
		t.Fatalf("good client: %d of %d events stored", got, n)
	}
}

// closedSoon asserts that the server closes c within d.
func closedSoon(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", d)
		}
		return
	}
}

func nested(depth int) []byte {
	b := []byte{0x81, 0xa1, 'k'}
	b = append(b, bytes.Repeat([]byte{0x91}, depth-1)...)
	return append(b, 0x01)
}

// TestDeepRecordDropped: one event nested a million levels deep is dropped
// and counted, the other events of its chunk are stored and the chunk is
// acknowledged; a good client meanwhile loses nothing.
func TestDeepRecordDropped(t *testing.T) {
	em := &testEmitter{}
	in, reg := startInputReg(t, nil, em)
	good := goodClient(t, in, "good", 300)
	entry := func(rec []byte) []byte {
		return append(append([]byte{0x92}, mp(t, 1700000000)...), rec...)
	}
	ok := mp(t, map[string]any{"ok": true})
	entries := bytes.Join([][]byte{entry(ok), entry(nested(1 << 20)), entry(ok)}, nil)
	c := dial(t, in)
	reqs := [][]byte{
		mp(t, []any{"deep", entries, map[string]any{"chunk": "deep-1"}}),
		mp(t, []any{"deep", 1700000000, msgpack.RawMessage(nested(1 << 20)), map[string]any{"chunk": "deep-2"}}),
		mp(t, []any{"deep", 1700000000, msgpack.RawMessage(nested(in.cfg.MaxDepth)), map[string]any{"chunk": "deep-3"}}),
	}
	for i, r := range reqs {
		start := time.Now()
		if _, err := c.Write(r); err != nil {
			t.Fatal(err)
		}
		if id, err := readAck(t, c, 5*time.Second); err != nil || id != fmt.Sprintf("deep-%d", i+1) {
			t.Fatalf("request %d: ack %q %v", i+1, id, err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("request %d took %v", i+1, el)
		}
	}
	waitGood(t, em, good, "good", 300)
	if n := em.tagCount("deep"); n != 3 {
		t.Fatalf("stored %d deep-tagged events, want 3 (2 of the chunk, 1 at the limit)", n)
	}
	if v := metricValue(t, reg, "logship_dropped_records_total", map[string]string{"reason": "too_deep"}); v != 2 {
		t.Fatalf("too_deep dropped %v, want 2", v)
	}
}

// tinyBomb is ~30 KB of gzip inflating to n events [1, {}] of 3 bytes.
func tinyBomb(t *testing.T, n int) []byte {
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	chunk := bytes.Repeat([]byte{0x92, 0x01, 0x80}, 100000)
	for i := 0; i < n; i += 100000 {
		_, _ = w.Write(chunk)
	}
	_ = w.Close()
	return gz.Bytes()
}

// memPeak samples HeapInuse and the input's accounted memory until stop is
// closed and returns their peaks.
func memPeak(in *Input, stop <-chan struct{}) <-chan [2]int64 {
	out := make(chan [2]int64, 1)
	go func() {
		var heap, acct int64
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			heap = max(heap, int64(ms.HeapInuse))
			acct = max(acct, in.mem.inUse())
			select {
			case <-stop:
				out <- [2]int64{heap, acct}
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return out
}

// TestCompressionBombBounded: eight clients at once send a 30 KB gzip
// request inflating to ten million tiny events. Each is refused (too many
// events), the heap stays within twice memory_limit (measured), and a good
// client loses nothing.
func TestCompressionBombBounded(t *testing.T) {
	em := &testEmitter{}
	const decomp = 32 << 20
	in, reg := startInputReg(t, func(c *Config) {
		c.MaxFrameBytes = 1 << 20
		c.MaxDecompressedBytes = decomp
		c.MemoryLimit = conftypes.Size(c.limits().RequestBytes())
	}, em)
	bomb := mp(t, []any{"bomb", tinyBomb(t, 10_000_000), map[string]any{"compressed": "gzip", "chunk": "bomb"}})
	if len(bomb) > 40<<10 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	peak := memPeak(in, stop)
	good := goodClient(t, in, "good", 300)
	var wg sync.WaitGroup
	for range 8 {
		c := dial(t, in)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Write(bomb)
			closedSoon(t, c, 20*time.Second)
		}()
	}
	wg.Wait()
	waitGood(t, em, good, "good", 300)
	close(stop)
	p := <-peak
	grew, acct := p[0]-int64(base.HeapInuse), p[1]
	limit := int64(in.cfg.MemoryLimit)
	t.Logf("decoding memory peaked at %d MiB, heap in use grew by %d MiB at most (memory_limit %d MiB)", acct>>20, grew>>20, limit>>20)
	// The buffers held never exceed twice memory_limit (one connection may
	// go over to finish its request); the heap adds the garbage of grown
	// buffers, which the GC lets reach the live heap's size again.
	if acct > 2*limit {
		t.Fatalf("decoding memory %d MiB, bound %d MiB", acct>>20, 2*limit>>20)
	}
	if bound := 4*limit + 32<<20; grew > bound {
		t.Fatalf("heap grew by %d MiB, bound %d MiB", grew>>20, bound>>20)
	}
	if v := metricValue(t, reg, "logship_errors_total", map[string]string{"reason": "too_many_entries"}); v != 8 {
		t.Fatalf("too_many_entries %v, want 8", v)
	}
	if em.tagCount("bomb") != 0 {
		t.Fatal("a bomb was stored")
	}
	testutil.CheckFor(t, 2*time.Second, func() error {
		if u := in.mem.inUse(); u != 0 {
			return fmt.Errorf("%d bytes still accounted", u)
		}
		return nil
	})
}

// TestBudget: a connection waits while the budget is spent, one holder at a
// time may exceed it to finish, one request larger than the budget is
// refused, and waiting ends with the connection.
func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a1 := &account{b: b, ctx: ctx}
	a2 := &account{b: b, ctx: ctx}
	a3 := &account{b: b, ctx: ctx}
	if err := a1.Resize(101); !errors.Is(err, errMemoryLimit) {
		t.Fatalf("a request over the limit: %v", err)
	}
	if err := a1.Resize(60); err != nil {
		t.Fatal(err)
	}
	if err := a2.Resize(30); err != nil {
		t.Fatal(err)
	}
	// a2 holds memory mid-request: it may go over to finish.
	if err := a2.Resize(80); err != nil || b.inUse() != 140 {
		t.Fatalf("%v %d", err, b.inUse())
	}
	// a1 holds memory too, but a2 has the overdraft: a1 waits.
	got := make(chan error, 1)
	go func() { got <- a1.Resize(70) }()
	// a3 holds nothing: it waits for memory under the limit.
	got3 := make(chan error, 1)
	go func() { got3 <- a3.Resize(10) }()
	select {
	case err := <-got:
		t.Fatalf("a1 did not wait: %v", err)
	case err := <-got3:
		t.Fatalf("a3 did not wait: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	a2.release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := <-got3; err != nil {
		t.Fatal(err)
	}
	if b.inUse() != 80 {
		t.Fatalf("in use %d", b.inUse())
	}
	ctx4, cancel4 := context.WithCancel(context.Background())
	a4 := &account{b: b, ctx: ctx4}
	go func() { time.Sleep(20 * time.Millisecond); cancel4() }()
	if err := a4.Resize(50); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting did not end with the connection: %v", err)
	}
	a1.release()
	a3.release()
	if b.inUse() != 0 {
		t.Fatalf("in use %d", b.inUse())
	}
}

// TestIdleTimeout: a silent connection is closed after idle_timeout; one
// whose chunk waits for the buffer is not.
func TestIdleTimeout(t *testing.T) {
	em := &testEmitter{hold: true}
	in, reg := startInputReg(t, func(c *Config) { c.IdleTimeout = conftypes.Duration(time.Second) }, em)
	silent := dial(t, in)
	waiting := dial(t, in)
	good := goodClient(t, in, "good", 300)
	if _, err := waiting.Write(mp(t, []any{"w", 1, map[string]any{"a": 1}, map[string]any{"chunk": "w1"}})); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	closedSoon(t, silent, 3*time.Second)
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("closed after %v", el)
	}
	time.Sleep(700 * time.Millisecond) // the waiting one is past its idle time too
	em.release()
	if id, err := readAck(t, waiting, 2*time.Second); err != nil || id != "w1" {
		t.Fatalf("ack %q %v", id, err)
	}
	waitGood(t, em, good, "good", 300)
	closedSoon(t, waiting, 3*time.Second)
	if v := metricValue(t, reg, "logship_forward_in_connections_closed_total", map[string]string{"reason": "idle_timeout"}); v < 2 { // the good client's may be idle too
		t.Fatalf("idle closes %v", v)
	}
}

// TestHandshakeTimeout: a client that does not answer HELO, and one that
// does not finish its TLS handshake, are closed after handshake_timeout,
// long before idle_timeout.
func TestHandshakeTimeout(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, func(c *Config) { c.SharedKey = "k"; c.HandshakeTimeout = conftypes.Duration(200 * time.Millisecond) }, em)
	good := goodClientKey(t, in, "good", 300, "k")
	c := dial(t, in)
	if _, err := forwardproto.NewDecoder(c, forwardproto.Limits{}).NextHelo(); err != nil {
		t.Fatal(err)
	}
	closedSoon(t, c, 2*time.Second)
	waitGood(t, em, good, "good", 300)

	certFile, keyFile, _, _ := makeCerts(t, t.TempDir())
	in, reg := startInputReg(t, func(c *Config) {
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
		c.HandshakeTimeout = conftypes.Duration(200 * time.Millisecond)
	}, &testEmitter{})
	// The connection metrics are shared by every input named fwd.
	before := metricValue(t, reg, "logship_forward_in_connections_closed_total", map[string]string{"reason": "handshake_timeout"})
	closedSoon(t, dial(t, in), 2*time.Second)
	testutil.CheckFor(t, time.Second, func() error {
		if v := metricValue(t, reg, "logship_forward_in_connections_closed_total", map[string]string{"reason": "handshake_timeout"}); v != before+1 {
			return fmt.Errorf("handshake_timeout closes %v", v)
		}
		return nil
	})
}

// TestPreAuthLimit: with shared_key, a PING larger than max_handshake_bytes
// closes the connection before it is buffered.
func TestPreAuthLimit(t *testing.T) {
	em := &testEmitter{}
	in, reg := startInputReg(t, func(c *Config) { c.SharedKey = "k" }, em)
	good := goodClientKey(t, in, "good", 300, "k")
	c := dial(t, in)
	if _, err := forwardproto.NewDecoder(c, forwardproto.Limits{}).NextHelo(); err != nil {
		t.Fatal(err)
	}
	// The header of a PING whose hostname claims 1 MiB, then bytes.
	ping := []byte{0x96, 0xa4, 'P', 'I', 'N', 'G', 0xdb, 0, 0x10, 0, 0}
	if _, err := c.Write(ping); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write(make([]byte, 8<<10))
	closedSoon(t, c, 2*time.Second)
	waitGood(t, em, good, "good", 300)
	testutil.CheckFor(t, time.Second, func() error {
		if v := metricValue(t, reg, "logship_errors_total", map[string]string{"reason": "auth"}); v != 1 {
			return fmt.Errorf("auth errors %v", v)
		}
		return nil
	})
}

// TestMaxConnections: connections past max_connections are closed at once
// and counted; the ones open keep working, and a slot freed is reused.
func TestMaxConnections(t *testing.T) {
	em := &testEmitter{}
	in, reg := startInputReg(t, func(c *Config) { c.MaxConnections = 4 }, em)
	// the counter is process-wide (metrics survive a reload): count from here
	before := metricValue(t, reg, "logship_forward_in_connections_closed_total", map[string]string{"reason": "max_connections"})
	var open []net.Conn
	for range 3 {
		open = append(open, dial(t, in))
	}
	good := goodClient(t, in, "good", 200)
	testutil.CheckFor(t, 2*time.Second, func() error {
		if n := in.connCount(); n != 4 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
	for range 5 {
		closedSoon(t, dial(t, in), time.Second)
	}
	waitGood(t, em, good, "good", 200)
	if v := metricValue(t, reg, "logship_forward_in_connections_closed_total", map[string]string{"reason": "max_connections"}); v-before != 5 {
		t.Fatalf("refused %v", v-before)
	}
	open[0].Close()
	testutil.CheckFor(t, 2*time.Second, func() error {
		if n := in.connCount(); n != 3 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
	waitGood(t, em, goodClient(t, in, "again", 10), "again", 10)
}

func (in *Input) connCount() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.conns)
}

// TestClosedWhileBlocked: clients that give up and reconnect while the
// buffer is full (Emit blocks) leave no connection behind: 50 of them
// closing while blocked are all closed by the input within a second or two,
// while a client that stays waits on, and gets its acks once the buffer
// takes chunks again.
func TestClosedWhileBlocked(t *testing.T) {
	em := &testEmitter{block: make(chan struct{})}
	in, reg := startInputReg(t, nil, em)
	stays := dial(t, in)
	if _, err := stays.Write(mp(t, []any{"stay", 1, map[string]any{"a": 1}, map[string]any{"chunk": "stay-1"}})); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		c, err := net.Dial("tcp", in.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(mp(t, []any{"gone", 1, map[string]any{"i": i}, map[string]any{"chunk": fmt.Sprint("gone-", i)}})); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			c.Close() // FIN
		} else {
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close() // RST
		}
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := in.connCount(); n != 1 {
			return fmt.Errorf("%d connections open", n)
		}
		return nil
	})
	if v := metricValue(t, reg, "logship_forward_in_connections_closed_total", map[string]string{"reason": "peer_gone"}); v < 25 {
		t.Fatalf("peer_gone %v", v) // the resets may also surface as read errors
	}
	close(em.block)
	if id, err := readAck(t, stays, 2*time.Second); err != nil || id != "stay-1" {
		t.Fatalf("ack %q %v", id, err)
	}
}

// TestClosedWhileAcksPending: a client that sent its chunk and left while
// the ack waits for the buffer (ack: downstream, a slow output) frees its
// socket at once; the chunk's id is still recorded when it is stored, so
// the client's resend on a new connection is answered without a second copy.
func TestClosedWhileAcksPending(t *testing.T) {
	em := &testEmitter{hold: true}
	in := startInput(t, nil, em)
	t.Cleanup(em.release) // before Stop, which waits for the acks
	before := openFDs(t)
	for i := range 20 {
		c, err := net.Dial("tcp", in.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(mp(t, []any{"p", 1, map[string]any{"i": i}, map[string]any{"chunk": fmt.Sprint("p-", i)}})); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 2*time.Second, func() error {
			if em.count() != i+1 {
				return errors.New("not emitted")
			}
			return nil
		})
		c.Close()
	}
	// Both ends of every connection are closed: no descriptor is left.
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := openFDs(t); n > before {
			return fmt.Errorf("%d descriptors open, %d before", n, before)
		}
		return nil
	})
	em.release()
	c := dial(t, in)
	if _, err := c.Write(mp(t, []any{"p", 1, map[string]any{"i": 3}, map[string]any{"chunk": "p-3"}})); err != nil {
		t.Fatal(err)
	}
	if id, err := readAck(t, c, 2*time.Second); err != nil || id != "p-3" {
		t.Fatalf("ack %q %v", id, err)
	}
	if n := em.count(); n != 20 {
		t.Fatalf("%d events stored, want 20", n)
	}
	testutil.CheckFor(t, 2*time.Second, func() error {
		if n := in.connCount(); n != 1 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
}

// TestMemoryBackpressure: while memory_limit is spent a connection needing
// more waits (it is not read), longer than idle_timeout without being
// closed as idle, and goes on once memory is freed.
func TestMemoryBackpressure(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, func(c *Config) {
		c.MaxFrameBytes, c.MaxDecompressedBytes = 1<<20, 1<<20
		c.MemoryLimit = conftypes.Size(c.limits().RequestBytes())
		c.IdleTimeout = conftypes.Duration(time.Second)
	}, em)
	hog := &account{b: in.mem, ctx: context.Background()}
	if err := hog.Resize(int(in.cfg.MemoryLimit)); err != nil {
		t.Fatal(err)
	}
	var entries []byte
	for i := range 3000 {
		entries = append(entries, mp(t, []any{1700000000, map[string]any{"i": i, "pad": strings.Repeat("x", 150)}})...)
	}
	c := dial(t, in)
	if _, err := c.Write(mp(t, []any{"mem", entries, map[string]any{"chunk": "m1"}})); err != nil {
		t.Fatal(err)
	}
	if _, err := readAck(t, c, 1500*time.Millisecond); err == nil {
		t.Fatal("read while memory_limit was spent")
	}
	if em.count() != 0 {
		t.Fatal("stored while memory_limit was spent")
	}
	hog.release()
	if id, err := readAck(t, c, 3*time.Second); err != nil || id != "m1" {
		t.Fatalf("ack %q %v", id, err)
	}
	if n := em.count(); n != 3000 {
		t.Fatalf("%d events", n)
	}
}

// TestStalledHeadersHoldNoMemory: clients that send the header of a huge
// request and stall do not spend memory_limit: a good client sending large
// requests meanwhile loses nothing and is not held back.
func TestStalledHeadersHoldNoMemory(t *testing.T) {
	em := &testEmitter{}
	in := startInput(t, func(c *Config) {
		c.MaxFrameBytes, c.MaxDecompressedBytes = 4<<20, 4<<20
		c.MemoryLimit = conftypes.Size(c.limits().RequestBytes())
	}, em)
	for range 10 {
		c := dial(t, in)
		// [tag, bin32 of 4 MiB - 16 ...] and nothing more.
		if _, err := c.Write([]byte{0x92, 0xa1, 't', 0xc6, 0x00, 0x3f, 0xff, 0xf0, 0x92}); err != nil {
			t.Fatal(err)
		}
	}
	var entries []byte
	for i := range 5000 {
		entries = append(entries, mp(t, []any{1700000000, map[string]any{"i": i, "pad": strings.Repeat("x", 150)}})...)
	}
	c := dial(t, in)
	for i := range 10 {
		id := fmt.Sprint("big-", i)
		if _, err := c.Write(mp(t, []any{"big", entries, map[string]any{"chunk": id}})); err != nil {
			t.Fatal(err)
		}
		if got, err := readAck(t, c, 3*time.Second); err != nil || got != id {
			t.Fatalf("ack %d: %q %v", i, got, err)
		}
	}
	if n := em.tagCount("big"); n != 50000 {
		t.Fatalf("%d events", n)
	}
}

// TestConfigBounds: every number of the config is bounded.
func TestConfigBounds(t *testing.T) {
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"max_frame_bytes", func(c *Config) { c.MaxFrameBytes = 100 }},
		{"max_frame_bytes", func(c *Config) { c.MaxFrameBytes = 2 << 30 }},
		{"max_decompressed_bytes", func(c *Config) { c.MaxDecompressedBytes = c.MaxFrameBytes - 1 }},
		{"max_decompressed_bytes", func(c *Config) { c.MaxDecompressedBytes = 5 << 30 }},
		{"max_entries_per_request", func(c *Config) { c.MaxEntriesPerRequest = 0 }},
		{"max_entries_per_request", func(c *Config) { c.MaxEntriesPerRequest = 2000000000 }},
		{"max_depth", func(c *Config) { c.MaxDepth = 0 }},
		{"max_depth", func(c *Config) { c.MaxDepth = 1000001 }},
		{"memory_limit", func(c *Config) { c.MemoryLimit = c.MaxFrameBytes }},
		{"memory_limit", func(c *Config) { c.MemoryLimit = 1 << 40 }},
		{"max_connections", func(c *Config) { c.MaxConnections = 0 }},
		{"max_connections", func(c *Config) { c.MaxConnections = 2000000000 }},
		{"idle_timeout", func(c *Config) { c.IdleTimeout = 0 }},
		{"idle_timeout", func(c *Config) { c.IdleTimeout = conftypes.Duration(48 * time.Hour) }},
		{"handshake_timeout", func(c *Config) { c.HandshakeTimeout = 0 }},
		{"handshake_timeout", func(c *Config) { c.HandshakeTimeout = conftypes.Duration(time.Hour) }},
		{"max_handshake_bytes", func(c *Config) { c.MaxHandshakeBytes = 10 }},
		{"max_handshake_bytes", func(c *Config) { c.MaxHandshakeBytes = 1 << 20 }},
		{"max_pending_acks", func(c *Config) { c.MaxPendingAcks = 0 }},
		{"max_pending_acks", func(c *Config) { c.MaxPendingAcks = 2000000000 }},
		{"dedup_window", func(c *Config) { c.DedupWindow = 0 }},
		{"dedup_window", func(c *Config) { c.DedupWindow = 2000000000 }},
		{"dedup_retention", func(c *Config) { c.DedupRetention = 0 }},
		{"dedup_retention", func(c *Config) { c.DedupRetention = conftypes.Duration(48 * time.Hour) }},
	}
	if err := defaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range cases {
		cfg := defaultConfig()
		c.mod(cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v", c.field, err)
		}
	}
	// dedup_window is not checked while dedup is off.
	cfg := defaultConfig()
	cfg.Dedup, cfg.DedupWindow = false, 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// flakyListener fails Accept with EMFILE a few times.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: fmt.Errorf("accept4: %w", errEMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptErrors: temporary accept errors are retried and the input stays
// ready; a permanent one turns Ready into an error.
func TestAcceptErrors(t *testing.T) {
	em := &testEmitter{}
	fl := &flakyListener{}
	fl.fails.Store(5)
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	in, err := New(testSettings(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if in.Ready() == nil {
		t.Fatal("ready before Start")
	}
	in.listen = func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		fl.Listener = ln
		return fl, err
	}
	if err := in.Start(context.Background(), em); err != nil {
		t.Fatal(err)
	}
	defer in.Stop(context.Background())
	waitGood(t, em, goodClient(t, in, "good", 10), "good", 10)
	if err := in.Ready(); err != nil {
		t.Fatalf("not ready after temporary errors: %v", err)
	}
	fl.Listener.Close() // the listener breaks under the input
	testutil.CheckFor(t, 2*time.Second, func() error {
		if in.Ready() == nil {
			return errors.New("still ready")
		}
		return nil
	})
	t.Log(in.Ready())
}

// TestListenFailureLeaksNothing: a Start that cannot listen (the port is
// taken) closes the dedup journal it opened, every time.
func TestListenFailureLeaksNothing(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	set := testSettings(t)
	before := openFDs(t)
	for range 20 {
		cfg := defaultConfig()
		cfg.Listen = taken.Addr().String()
		in, err := New(set, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(context.Background(), &testEmitter{}); err == nil {
			t.Fatal("listened on a taken port")
		}
		if err := in.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if after := openFDs(t); after > before {
		t.Fatalf("%d file descriptors open before, %d after 20 failed starts", before, after)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	var n int
	testutil.CheckFor(t, time.Second, func() error {
		ents, err := readDirNames("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd:", err)
		}
		n = len(ents)
		return nil
	})
	return n
}
