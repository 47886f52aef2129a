package kubernetes

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// The container ids of the pods in testdata (sha256 of a name).
const (
	webID        = "c842e7e9efb61e3cc052505d39c50d0e0ae82d6b04405ac03322df3549cdf6e0"
	webUID       = "6f0e9d4c-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
	promID       = "85b4f17f60507b27523846854c8fa55649ff6c7bc069185f4852131687fa0a8e" // restart 1
	promLastID   = "820680a305d8d9fbae585198c3966491191ea7985b1337dabaa7345297628b8c" // restart 0, terminated
	promUID      = "a1b2c3d4-e5f6-4789-8abc-def012345678"
	lateID       = "8af5bd719513594fd030325442ac93caa54aa05aafb75621dcb9d91c101dc3f7"
	webPath      = "/var/log/containers/web-7d4b9c8f5-x2x9q_default_nginx-" + webID + ".log"
	latePath     = "/var/log/containers/batch-job-28571234-q7w2z_default_worker-" + lateID + ".log"
	nginxImage   = "docker.io/library/nginx:1.25"
	testNodeName = "node-a"
)

// response is what the fake answers to one request.
type response struct {
	status int
	body   []byte
	// stream, when set, is written after the body and flushed, event by
	// event; the answer then stays open until hold is closed or the
	// request ends.
	stream [][]byte
	hold   chan struct{}
}

// fake is a kubelet or API server: an httptest TLS server answering from
// a function of the request, and recording what it saw.
type fake struct {
	srv *httptest.Server
	ca  string // the server's certificate as a PEM file

	mu     sync.Mutex
	reqs   []*http.Request
	auths  []string
	answer func(r *http.Request, n int) response
}

func newFake(t testing.TB, answer func(r *http.Request, n int) response) *fake {
	t.Helper()
	return newFakeTLS(t, answer, nil)
}

// newFakeTLS is newFake with the server's TLS settings (client
// authentication, say); the server's certificate is httptest's.
func newFakeTLS(t testing.TB, answer func(r *http.Request, n int) response, tc *tls.Config) *fake {
	t.Helper()
	f := &fake{answer: answer}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = tc
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	f.srv.StartTLS()
	f.ca = filepath.Join(t.TempDir(), "ca.crt")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	if err := os.WriteFile(f.ca, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, r)
	f.auths = append(f.auths, r.Header.Get("Authorization"))
	answer := f.answer
	f.mu.Unlock()
	a := answer(r, n)
	if a.status == 0 {
		a.status = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
	if a.stream == nil && a.hold == nil {
		return
	}
	fl := w.(http.Flusher)
	fl.Flush()
	for _, ev := range a.stream {
		_, _ = w.Write(ev)
		fl.Flush()
	}
	if a.hold != nil {
		select {
		case <-a.hold:
		case <-r.Context().Done():
		}
	}
}

func (f *fake) setAnswer(a func(r *http.Request, n int) response) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fake) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

func (f *fake) requests() ([]*http.Request, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...), append([]string(nil), f.auths...)
}

// serveFile answers every request with a testdata file.
func serveFile(t *testing.T, name string) func(*http.Request, int) response {
	b := readTestdata(t, name)
	return func(*http.Request, int) response { return response{body: b} }
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testConfig is a kubelet config against f, with a token file holding
// "token-1".
func testConfig(t *testing.T, f *fake) *Config {
	t.Helper()
	cfg := defaultConfig()
	cfg.KubeletURL = f.srv.URL
	cfg.APIServerURL = f.srv.URL
	cfg.TLS.CAFile = f.ca
	cfg.TokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(cfg.TokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.CacheTTL = conftypes.Duration(time.Hour)
	cfg.RetryBackoff = conftypes.Duration(10 * time.Millisecond)
	cfg.RequestTimeout = conftypes.Duration(5 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newTestFilter creates the filter with its own metrics registry and
// closes it at the end of the test.
func newTestFilter(t testing.TB, cfg *Config) (*Filter, *prometheus.Registry) {
	t.Helper()
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt)
	} else {
		log = zap.NewNop()
	}
	return newTestFilterLog(t, cfg, log)
}

// newTestFilterLog is newTestFilter logging to log.
func newTestFilterLog(t testing.TB, cfg *Config, log *zap.Logger) (*Filter, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg).Component(pipeline.KindFilter, t.Name(), "kubernetes")
	f, err := New(pipeline.Settings{Name: t.Name(), Type: "kubernetes", NodeName: testNodeName, Logger: log, Metrics: m}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, reg
}

// writeClientCert makes a CA and a client certificate it signs (common
// name cn, usage client auth), writes the certificate and its key as PEM
// files and returns their paths with the CA's pool, for a server's
// ClientCAs.
func writeClientCert(t *testing.T, cn string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return certFile, keyFile, pool
}

// rec is a record: alternating keys and values.
func rec(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// chunk encodes records (maps of strings, or raw msgpack as []byte) as a
// chunk of tag.
func chunk(tag string, recs ...any) pipeline.Chunk {
	var e []byte
	for i, r := range recs {
		var body []byte
		switch r := r.(type) {
		case []byte:
			body = r
		case map[string]any:
			body = mpack.AppendMapHeader(nil, len(r))
			for _, k := range sortedKeys(r) {
				body = mpack.AppendString(body, k)
				body = mpack.AppendString(body, r[k].(string))
			}
		}
		e = mpack.AppendEntry(e, mpack.EventTime{Sec: uint32(1700000000 + i)}, body)
	}
	return pipeline.Chunk{Tag: tag, Entries: e, Count: len(recs), Source: []byte("src")}
}

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// records decodes a chunk's records as JSON values (a record that is not
// a map is returned as its JSON too).
func records(t testing.TB, c pipeline.Chunk) []map[string]any {
	t.Helper()
	var out []map[string]any
	in := c.Entries
	for len(in) > 0 {
		n, hdr, err := mpack.ReadArrayHeader(in)
		if err != nil || n != 2 {
			t.Fatalf("entry: %v", err)
		}
		tn, _ := mpack.SkipValue(in[hdr:])
		rn, err := mpack.SkipValue(in[hdr+tn:])
		if err != nil {
			t.Fatal(err)
		}
		r := in[hdr+tn : hdr+tn+rn]
		if _, _, err := mpack.ReadMapHeader(r); err != nil {
			out = append(out, map[string]any{"<not a map>": r})
		} else {
			js, err := mpack.AppendRecordJSON(nil, r)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(js, &m); err != nil {
				t.Fatalf("%s: %v", js, err)
			}
			out = append(out, m)
		}
		in = in[hdr+tn+rn:]
	}
	if len(out) != c.Count {
		t.Fatalf("%d records, Count %d", len(out), c.Count)
	}
	return out
}

// meta is the metadata map of a record, or nil.
func meta(r map[string]any) map[string]any {
	m, _ := r["kubernetes"].(map[string]any)
	return m
}

// metric reads the sum of a metric's series whose labels include the
// given name/value pairs.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

var _ = testutil.CheckFor
