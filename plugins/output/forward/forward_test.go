package forward

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/logship/logship/conf"
	"github.com/logship/logship/pipeline"
	fwdin "github.com/logship/logship/plugins/input/forward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// counter is a receiver's emitter: it counts events and acks at once.
type counter struct {
	mu     sync.Mutex
	events int
	chunks int
}

func (c *counter) Emit(_ context.Context, ch pipeline.Chunk, ack pipeline.AckFunc) error {
	c.mu.Lock()
	c.events += ch.Count
	c.chunks++
	c.mu.Unlock()
	ack(nil)
	return nil
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events
}

func receiver(t *testing.T, listen, sharedKey string, em pipeline.Emitter) *fwdin.Input {
	t.Helper()
	cfg := fwdin.Factory().NewConfig().(*fwdin.Config)
	cfg.Listen, cfg.SharedKey, cfg.Heartbeat = listen, sharedKey, false
	in, err := fwdin.New(pipeline.Settings{Name: "recv", DataDir: t.TempDir(), Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "recv")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), em); err != nil {
		t.Fatal(err)
	}
	return in
}

func output(t *testing.T, dataDir string, mod func(*Config)) *Output {
	t.Helper()
	cfg := defaultConfig()
	cfg.RetryMin, cfg.RetryMax = conf.Duration(20*time.Millisecond), conf.Duration(200*time.Millisecond)
	cfg.ConnectTimeout = conf.Duration(time.Second)
	mod(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	o, err := New(pipeline.Settings{Name: "fwd", DataDir: dataDir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "fwd")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return o
}

func batch(p int, off uint64, n int) pipeline.Batch {
	var e []byte
	for i := range n {
		var rec []byte
		rec = pipeline.AppendMapHeader(rec, 1)
		rec = pipeline.AppendString(rec, "i")
		rec = pipeline.AppendInt(rec, int64(i))
		e = pipeline.AppendEntry(e, pipeline.EventTime{Sec: 1}, rec)
	}
	return pipeline.Batch{Chunk: pipeline.Chunk{Tag: "t", Entries: e, Count: n}, Partition: p, Offset: off}
}

// sendAll delivers batches concurrently and waits for every done.
func sendAll(t *testing.T, o *Output, batches []pipeline.Batch, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := make(chan error, len(batches))
	for _, b := range batches {
		o.WriteAsync(ctx, b, func(err error) { errs <- err })
	}
	for range batches {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeliversWithAcksGzipAndNone(t *testing.T) {
	for _, comp := range []string{"gzip", "none"} {
		t.Run(comp, func(t *testing.T) {
			em := &counter{}
			in := receiver(t, "127.0.0.1:0", "", em)
			defer in.Stop(context.Background())
			o := output(t, t.TempDir(), func(c *Config) { c.Servers = []string{in.Addr().String()}; c.Compress = comp })
			defer o.Stop(context.Background())
			var bs []pipeline.Batch
			for i := range 50 {
				bs = append(bs, batch(i%4, uint64(i), 100))
			}
			sendAll(t, o, bs, 10*time.Second)
			if n := em.count(); n != 5000 {
				t.Fatalf("%d events", n)
			}
		})
	}
}

// TestResendAfterCrashStoredOnce: a second output on the same data_dir
// (a restart) resends (partition, offset) with the same chunk id, and the
// receiver stores it once.
func TestResendAfterCrashStoredOnce(t *testing.T) {
	em := &counter{}
	in := receiver(t, "127.0.0.1:0", "", em)
	defer in.Stop(context.Background())
	dir := t.TempDir()
	o1 := output(t, dir, func(c *Config) { c.Servers = []string{in.Addr().String()} })
	sendAll(t, o1, []pipeline.Batch{batch(1, 7, 10)}, 5*time.Second)
	o1.Stop(context.Background())
	o2 := output(t, dir, func(c *Config) { c.Servers = []string{in.Addr().String()} })
	defer o2.Stop(context.Background())
	if o1.SenderID() != o2.SenderID() {
		t.Fatal("sender id changed across a restart")
	}
	sendAll(t, o2, []pipeline.Batch{batch(1, 7, 10), batch(1, 8, 10)}, 5*time.Second)
	if n := em.count(); n != 20 {
		t.Fatalf("stored %d events, want 20 (the resent chunk once)", n)
	}
}

func TestFailoverAndLateServer(t *testing.T) {
	em := &counter{}
	a := receiver(t, "127.0.0.1:0", "", em)
	// b's address is reserved but nothing listens yet.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	bAddr := ln.Addr().String()
	ln.Close()
	o := output(t, t.TempDir(), func(c *Config) { c.Servers = []string{a.Addr().String(), bAddr} })
	defer o.Stop(context.Background())
	var bs []pipeline.Batch
	for i := range 40 {
		bs = append(bs, batch(i%4, uint64(i), 10))
	}
	sendAll(t, o, bs, 10*time.Second) // partitions preferring b fail over to a
	if n := em.count(); n != 400 {
		t.Fatalf("%d events", n)
	}
	// a goes away, b comes up: delivery resumes by itself.
	a.Stop(context.Background())
	b := receiver(t, bAddr, "", em)
	defer b.Stop(context.Background())
	sendAll(t, o, []pipeline.Batch{batch(0, 100, 10), batch(1, 101, 10)}, 10*time.Second)
	if n := em.count(); n != 420 {
		t.Fatalf("%d events", n)
	}
}

func TestSharedKey(t *testing.T) {
	em := &counter{}
	in := receiver(t, "127.0.0.1:0", "k3y", em)
	defer in.Stop(context.Background())
	o := output(t, t.TempDir(), func(c *Config) {
		c.Servers = []string{in.Addr().String()}
		c.SharedKey = "k3y"
		c.SelfHostname = "client-a"
	})
	sendAll(t, o, []pipeline.Batch{batch(0, 0, 5)}, 5*time.Second)
	o.Stop(context.Background())
	bad := output(t, t.TempDir(), func(c *Config) { c.Servers = []string{in.Addr().String()}; c.SharedKey = "wrong" })
	defer bad.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	bad.WriteAsync(ctx, batch(0, 1, 5), func(err error) { errc <- err })
	if err := <-errc; err == nil {
		t.Fatal("delivered with a wrong key")
	}
	if n := em.count(); n != 5 {
		t.Fatalf("%d events", n)
	}
}

// TestNoAckNoDone: a receiver that reads but never acks: the chunk is
// not reported delivered, and cancelling ends the delivery promptly.
func TestNoAckNoDone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				buf := make([]byte, 65536)
				for {
					if _, err := c.Read(buf); err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	o := output(t, t.TempDir(), func(c *Config) {
		c.Servers = []string{ln.Addr().String()}
		c.AckTimeout = conf.Duration(100 * time.Millisecond)
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	o.WriteAsync(ctx, batch(0, 0, 5), func(err error) { errc <- err })
	select {
	case err := <-errc:
		t.Fatalf("done(%v) without an ack", err)
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("done(nil) after cancel")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no done after cancel")
	}
	o.Stop(context.Background())
	ln.Close()
	conns.Wait()
}

func BenchmarkForwardToOwnInput(b *testing.B) {
	for _, comp := range []string{"none", "gzip"} {
		b.Run(comp, func(b *testing.B) {
			em := &counter{}
			cfg := fwdin.Factory().NewConfig().(*fwdin.Config)
			cfg.Listen, cfg.Heartbeat, cfg.Dedup = "127.0.0.1:0", false, false
			in, _ := fwdin.New(pipeline.Settings{Name: "recv", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "recv")}, cfg)
			_ = in.Start(context.Background(), em)
			defer in.Stop(context.Background())
			oc := defaultConfig()
			oc.Servers, oc.Compress = []string{in.Addr().String()}, comp
			o, _ := New(pipeline.Settings{Name: "fwd", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "fwd")}, oc)
			_ = o.Start(context.Background())
			defer o.Stop(context.Background())
			bt := batch(0, 0, 1000)
			b.SetBytes(int64(len(bt.Entries)))
			sem := make(chan struct{}, 16)
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				sem <- struct{}{}
				wg.Add(1)
				bb := bt
				bb.Offset = uint64(i)
				o.WriteAsync(context.Background(), bb, func(err error) {
					if err != nil {
						panic(fmt.Sprint(err))
					}
					<-sem
					wg.Done()
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
