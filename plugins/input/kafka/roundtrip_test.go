package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
	kafkaout "github.com/logship/logship/plugins/output/kafka"
)

// TestOutputRoundTrip: what the kafka output writes (json or msgpack
// values, the tag in a header, the event time as the timestamp) comes back
// as the same events: tag, record and time (to the millisecond, Kafka's
// resolution).
func TestOutputRoundTrip(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(3, "rt-json", "rt-msgpack"))
	base := time.Date(2025, 1, 2, 3, 4, 5, 678912345, time.UTC)
	recs := []map[string]any{
		{"id": "r-0", "msg": "hello", "n": int64(-5), "f": 1.5, "ok": true, "nested": map[string]any{"a": []any{"x", int64(1)}}},
		{"id": "r-1", "msg": "ünïcode \"quoted\"\n", "nil": nil},
	}
	var entries []byte
	for i, r := range recs {
		b, err := msgpack.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		entries = mpack.AppendEntry(entries, mpack.EventTimeOf(base.Add(time.Duration(i)*time.Second)), b)
	}
	for _, format := range []string{"json", "msgpack"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			topic := "rt-" + format
			ocfg := &kafkaout.Config{}
			*ocfg = *kafkaout.Factory().NewConfig().(*kafkaout.Config)
			ocfg.Brokers = c.ListenAddrs()
			ocfg.Topic = topic
			ocfg.Format = format
			out, err := kafkaout.New(pipeline.Settings{Name: "kafka.out", Type: "kafka", DataDir: t.TempDir()}, ocfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := out.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = out.Stop(context.Background()) }()
			if err := out.Write(ctx, pipeline.Batch{Chunk: pipeline.Chunk{Tag: "app.web", Entries: entries, Count: len(recs)}, Partition: 0, Offset: 1, Epoch: 1}); err != nil {
				t.Fatal(err)
			}

			e := newEmitter(t)
			cfg := testConfig(c, "g-"+format, topic)
			cfg.Format = format
			startInput(t, cfg, e)
			waitCount(t, e, len(recs), 10*time.Second)
			for _, r := range e.records() {
				var i int
				for i = range recs {
					if recs[i]["id"] == r.m["id"] {
						break
					}
				}
				want := normalize(t, recs[i])
				if !reflect.DeepEqual(ints(r.m), ints(want)) {
					t.Errorf("record %#v, want %#v", r.m, want)
				}
				if r.tag != "app.web" {
					t.Errorf("tag %q", r.tag)
				}
				if wt := base.Add(time.Duration(i) * time.Second).Truncate(time.Millisecond); !r.time.Time().Equal(wt) {
					t.Errorf("time %v, want %v", r.time.Time(), wt)
				}
			}
		})
	}
}

// normalize passes m through msgpack as the test emitter decodes records.
func normalize(t *testing.T, m map[string]any) map[string]any {
	b, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := msgpack.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// ints turns every integer in v into an int64: msgpack writes each in its
// narrowest form, which differs between the JSON and msgpack paths.
func ints(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = ints(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = ints(e)
		}
		return out
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	}
	return v
}

// TestTLSAndSASL: the input reads from brokers that require TLS and
// SCRAM-SHA-256.
func TestTLSAndSASL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, serverCert := testCerts(t, dir)
	c := cluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "logship", "secret"), kfake.SeedTopics(1, "secure"))
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(ca)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scram.Auth{User: "logship", Pass: "secret"}.AsSha256Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "secure", Value: []byte(`{"id":"s-0"}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	e := newEmitter(t)
	cfg := testConfig(c, "g", "secure")
	cfg.TLS = conftypes.TLS{CAFile: caFile}
	cfg.SASL = SASL{Mechanism: "SCRAM-SHA-256", Username: "logship", Password: "secret"}
	startInput(t, cfg, e)
	waitCount(t, e, 1, 10*time.Second)
	if got := e.records()[0].id(); got != "s-0" {
		t.Fatalf("got %q", got)
	}
}

// testCerts writes a CA to dir and returns its path and a server
// certificate for 127.0.0.1 signed by it.
func testCerts(t *testing.T, dir string) (string, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
