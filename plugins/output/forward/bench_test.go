package forward

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	fwdin "github.com/logship/logship/plugins/input/forward"
)

// countingEmitter counts what a receiver gets and acks at once.
type countingEmitter struct{ events atomic.Int64 }

func (c *countingEmitter) Emit(_ context.Context, ch pipeline.Chunk, ack pipeline.AckFunc) error {
	c.events.Add(int64(ch.Count))
	ack(nil)
	return nil
}

// benchEntries returns n log-like events of about 200 bytes each.
func benchEntries(n int) []byte {
	var e, rec []byte
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	x := uint64(0x9e3779b97f4a7c15)
	for i := range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		line := fmt.Sprintf("2026-11-22T23:50:%02d.%06dZ INFO http request handled method=%s path=/api/v1/items/%d status=%d bytes=%d duration_ms=%d trace=%016x",
			i%60, (i*7919)%1000000, methods[x%4], x%100000, 200+int(x%5), x%65536, x%2000, x)
		rec = mpack.AppendMapHeader(rec[:0], 3)
		rec = mpack.AppendString(rec, "log")
		rec = mpack.AppendString(rec, line)
		rec = mpack.AppendString(rec, "stream")
		rec = mpack.AppendString(rec, "stdout")
		rec = mpack.AppendString(rec, "pod")
		rec = mpack.AppendString(rec, "checkout-7d9f8c6b5-x2x4q")
		e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000 + uint32(i), Nsec: uint32(i)}, rec)
	}
	return e
}

// BenchmarkForwardToOwnInput: the forward output delivers 1000-event
// chunks (~200 bytes per event) over loopback to our own forward input
// (dedup off, a counting emitter), waiting for acks, with max_in_flight 16
// on one partition as the runner would drive it.
//
//	go test -run '^$' -bench BenchmarkForwardToOwnInput -benchtime 3s ./plugins/output/forward/
func BenchmarkForwardToOwnInput(b *testing.B) {
	const events = 1000
	entries := benchEntries(events)
	for _, comp := range []string{"none", "gzip", "zstd"} {
		b.Run("compress="+comp, func(b *testing.B) {
			em := &countingEmitter{}
			cfg := fwdin.Factory().NewConfig().(*fwdin.Config)
			cfg.Listen, cfg.Heartbeat, cfg.Dedup, cfg.SelfHostname = "127.0.0.1:0", false, false, "receiver"
			in, err := fwdin.New(pipeline.Settings{Name: "recv", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "recv")}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := in.Start(context.Background(), em); err != nil {
				b.Fatal(err)
			}
			defer in.Stop(context.Background())
			o := newOutput(b, "", nil, func(c *Config) {
				c.Servers = []string{in.Addr().String()}
				c.Compress = comp
			})
			frame, _ := forwardproto.NewEncoder().AppendPackedForward(nil, "bench", entries, events, "", compressions[comp])

			b.SetBytes(int64(len(entries)))
			b.ReportAllocs()
			sem := make(chan struct{}, o.MaxInFlight())
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			for i := range b.N {
				sem <- struct{}{}
				wg.Add(1)
				o.WriteAsync(context.Background(), pipeline.Batch{Chunk: pipeline.Chunk{Tag: "bench", Entries: entries, Count: events}, Offset: uint64(i)}, func(err error) {
					if err != nil {
						failed.Store(err)
					}
					<-sem
					wg.Done()
				})
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			if got := em.events.Load(); got != int64(b.N*events) {
				b.Fatalf("receiver counted %d events, want %d", got, b.N*events)
			}
			b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(len(frame))/events, "wire_B/event")
		})
	}
}

// k8sEntries returns n container-log events as the agent ships them from
// Kubernetes nodes, about 330 bytes each: a short log line, its stream, and
// the pod's metadata (repeated in every event of a pod).
func k8sEntries(n int) []byte {
	var e, rec []byte
	x := uint64(0x2545f4914f6cdd1d)
	levels := []string{"info", "info", "info", "warn", "error", "debug"}
	for i := range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		line := fmt.Sprintf(`{"level":"%s","ts":%d.%03d,"msg":"order processed","order_id":"%08x","items":%d,"latency_ms":%d}`,
			levels[x%6], 1_700_000_000+i/100, x%1000, uint32(x>>8), x%17, x%900)
		pod := fmt.Sprintf("checkout-7d9f8c6b5-%05x", (x>>20)%8)
		rec = mpack.AppendMapHeader(rec[:0], 3)
		rec = mpack.AppendString(rec, "log")
		rec = mpack.AppendString(rec, line)
		rec = mpack.AppendString(rec, "stream")
		rec = mpack.AppendString(rec, "stdout")
		rec = mpack.AppendString(rec, "kubernetes")
		rec = mpack.AppendMapHeader(rec, 5)
		for _, kv := range [][2]string{{"namespace_name", "shop"}, {"pod_name", pod}, {"container_name", "checkout"}, {"host", "ip-10-0-12-34.eu-west-1.compute.internal"}, {"container_image", "registry.example.com/shop/checkout:1.42.0"}} {
			rec = mpack.AppendString(rec, kv[0])
			rec = mpack.AppendString(rec, kv[1])
		}
		e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000 + uint32(i/100), Nsec: uint32(i)}, rec)
	}
	return e
}

// BenchmarkCompression measures what the compress setting costs and saves
// on 1000-event chunks of realistic records: the sender's CPU to encode a
// chunk (encode), the receiver's CPU to decode it (decode, our forward
// input's decoder), both in ns per event on one core, and the bytes per
// event on the wire. This is what the default of compress is chosen from
// (see Config.Compress).
//
//	go test -run '^$' -bench BenchmarkCompression -benchtime 2s ./plugins/output/forward/
func BenchmarkCompression(b *testing.B) {
	const events = 1000
	for _, data := range []struct {
		name    string
		entries []byte
	}{{"applog", benchEntries(events)}, {"k8s", k8sEntries(events)}} {
		for _, comp := range []string{"none", "gzip", "zstd"} {
			enc := forwardproto.NewEncoder()
			chunk := forwardproto.EpochChunkID([6]byte{1, 2, 3, 4, 5, 6}, 1<<32|1, 0, 0)
			frame, err := enc.AppendPackedForward(nil, "app.bench", data.entries, events, chunk, compressions[comp])
			if err != nil {
				b.Fatal(err)
			}
			report := func(b *testing.B) {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
				b.ReportMetric(float64(len(frame))/events, "wire_B/event")
				b.ReportMetric(float64(len(data.entries))/events, "raw_B/event")
			}
			b.Run(fmt.Sprintf("data=%s/compress=%s/encode", data.name, comp), func(b *testing.B) {
				buf := make([]byte, 0, len(frame)*2)
				b.SetBytes(int64(len(data.entries)))
				b.ReportAllocs()
				for b.Loop() {
					if buf, err = enc.AppendPackedForward(buf[:0], "app.bench", data.entries, events, chunk, compressions[comp]); err != nil {
						b.Fatal(err)
					}
				}
				report(b)
			})
			b.Run(fmt.Sprintf("data=%s/compress=%s/decode", data.name, comp), func(b *testing.B) {
				r := &repeatReader{frame: frame}
				dec := forwardproto.NewDecoder(r, forwardproto.Limits{})
				b.SetBytes(int64(len(data.entries)))
				b.ReportAllocs()
				for b.Loop() {
					req, err := dec.Next()
					if err != nil || req.Count != events {
						b.Fatalf("%v (%d events)", err, req.Count)
					}
				}
				report(b)
			})
		}
	}
}

// repeatReader reads frame over and over.
type repeatReader struct {
	frame []byte
	at    int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.frame[r.at:])
	r.at = (r.at + n) % len(r.frame)
	return n, nil
}

// BenchmarkSyncSmallChunks: one 10-event chunk in flight at a time over
// loopback to our own forward input (a synchronous sender's load as the
// agent relays it), through WriteAsync's own write (fast) and through a
// deliver goroutine per chunk (deliver). ns/op is the sender's and the
// receiver's work per chunk plus the round trip.
//
//	go test -run '^$' -bench BenchmarkSyncSmallChunks -benchtime 3s ./plugins/output/forward/
func BenchmarkSyncSmallChunks(b *testing.B) {
	const events = 10
	entries := benchEntries(events)
	for _, path := range []string{"fast", "deliver"} {
		b.Run("path="+path, func(b *testing.B) {
			noFastSend = path == "deliver"
			defer func() { noFastSend = false }()
			em := &countingEmitter{}
			cfg := fwdin.Factory().NewConfig().(*fwdin.Config)
			cfg.Listen, cfg.Heartbeat, cfg.Dedup, cfg.SelfHostname = "127.0.0.1:0", false, false, "receiver"
			in, err := fwdin.New(pipeline.Settings{Name: "recv", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "recv")}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := in.Start(context.Background(), em); err != nil {
				b.Fatal(err)
			}
			defer in.Stop(context.Background())
			o := newOutput(b, "", nil, func(c *Config) { c.Servers = []string{in.Addr().String()} })
			done := make(chan error, 1)
			reply := func(err error) { done <- err }
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				o.WriteAsync(context.Background(), pipeline.Batch{Chunk: pipeline.Chunk{Tag: "bench", Entries: entries, Count: events}, Offset: uint64(i)}, reply)
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSendFast: the forward output's own cost per 1000-event chunk
// (~200 bytes per event, uncompressed) on its fast path, one chunk in
// flight at a time as behind a synchronous sender: the receiver reads each
// frame by its known length and acks it without decoding it, so that
// what changes is what the output spends building and writing the frame.
//
//	go test -run '^$' -bench BenchmarkSendFast -count 6 ./plugins/output/forward/
func BenchmarkSendFast(b *testing.B) {
	const events = 1000
	entries := benchEntries(events)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	o := newOutput(b, "", nil, func(c *Config) {
		c.Servers = []string{ln.Addr().String()}
		c.Compress = "none"
	})
	// chunk ids of epoch 0 all have the same length
	frame, _ := forwardproto.NewEncoder().AppendPackedForward(nil, "bench", entries, events, forwardproto.EpochChunkID(o.SenderID(), 0, 0, 0), forwardproto.CompressNone)
	frameLen := len(frame)
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		var ack []byte
		for off := uint64(0); ; off++ {
			if _, err := io.ReadFull(c, buf[:frameLen]); err != nil {
				srvDone <- nil
				return
			}
			ack = forwardproto.AppendAck(ack[:0], []byte(forwardproto.EpochChunkID(o.SenderID(), 0, 0, off)), false)
			if _, err := c.Write(ack); err != nil {
				srvDone <- err
				return
			}
		}
	}()
	send := func(off uint64) error {
		ch := make(chan error, 1)
		o.WriteAsync(context.Background(), pipeline.Batch{Chunk: pipeline.Chunk{Tag: "bench", Entries: entries, Count: events}, Offset: off}, func(err error) { ch <- err })
		return <-ch
	}
	if err := send(0); err != nil { // connects
		b.Fatal(err)
	}
	b.SetBytes(int64(len(entries)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := send(uint64(i + 1)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = o.Stop(context.Background())
	if err := <-srvDone; err != nil {
		b.Fatal(err)
	}
}
