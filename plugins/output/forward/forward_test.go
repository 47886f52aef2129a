package forward

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	fwdin "github.com/logship/logship/plugins/input/forward"
)

func TestDeliversToOwnInputWithAcks(t *testing.T) {
	for _, comp := range []string{"gzip", "zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			rec := newRecorder()
			in := receiver(t, "127.0.0.1:0", nil, rec)
			o := newOutput(t, t.TempDir(), nil, func(c *Config) {
				c.Servers = []string{in.Addr().String()}
				c.Compress = comp
				c.MaxInFlight = 4
			})
			bs := batches(4, 10, 50)
			deliverAll(t, o, bs, 10*time.Second)
			checkAllArrived(t, bs, rec)
			if n := rec.count(); n != len(bs)*50 {
				t.Fatalf("receiver stored %d events, want %d", n, len(bs)*50)
			}
			if n := testutil.Value(o.m.acks); n != float64(len(bs)) {
				t.Fatalf("acks_total %v, want %d", n, len(bs))
			}
			if n := testutil.Value(o.m.latency.(prometheus.Histogram)); n != float64(len(bs)) {
				t.Fatalf("ack latency observed %v times, want %d", n, len(bs))
			}
			if n := testutil.Value(o.m.inflight); n != 0 {
				t.Fatalf("inflight_chunks %v after delivery", n)
			}
			if n := testutil.Value(o.m.connects); n != 1 {
				t.Fatalf("connects_total %v: the connection was not reused", n)
			}
		})
	}
}

// TestChunkIDsAndAcksOutOfOrder: every chunk carries
// EpochChunkID(sender, epoch, partition, offset), acks answered last-first
// are matched by id, and a partition's chunks are first written in order.
func TestChunkIDsAndAcksOutOfOrder(t *testing.T) {
	f := newFakeServer(t, ackReverse)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{f.addr()}; c.MaxInFlight = 16 })
	bs := batches(2, 32, 3) // 64 chunks: acks come in groups of 8
	for i := range bs {
		if i%2 == 0 {
			bs[i].Epoch = 0xc0ffee<<32 | 7 // the rest keep epoch 0: records of an older release
		}
	}
	deliverAll(t, o, bs, 10*time.Second)
	want := map[string]pipeline.Batch{}
	for _, b := range bs {
		want[forwardproto.EpochChunkID(o.SenderID(), b.Epoch, uint16(b.Partition), b.Offset)] = b
	}
	reqs := f.requests()
	if len(reqs) != len(bs) {
		t.Fatalf("%d requests for %d chunks", len(reqs), len(bs))
	}
	last := map[string]int{} // partition prefix -> last offset seen
	for _, r := range reqs {
		b, ok := want[r.chunk]
		if !ok || r.tag != b.Tag || r.count != b.Count {
			t.Fatalf("request tag %s chunk %q count %d: not the chunk id of its batch", r.tag, r.chunk, r.count)
		}
		sender, epoch, p, off, err := forwardproto.ParseChunkID(r.chunk)
		if err != nil || sender != o.SenderID() || epoch != b.Epoch || int(p) != b.Partition || off != b.Offset {
			t.Fatalf("chunk id %q decodes to %x/%x/%d/%d (%v)", r.chunk, sender, epoch, p, off, err)
		}
		if wantLen := map[bool]int{true: 24, false: 32}[b.Epoch == 0]; len(r.chunk) != wantLen {
			t.Fatalf("epoch %x: chunk id %q of %d characters, want %d", b.Epoch, r.chunk, len(r.chunk), wantLen)
		}
		key := tagOf(b.Partition, 0)
		if prev, ok := last[key]; ok && int(off) < prev {
			t.Fatalf("partition %d: offset %d written after %d", p, off, prev)
		}
		last[key] = int(off)
		delete(want, r.chunk)
	}
}

// TestReusedOffsetNewEpochIsStored: after a buffer lost its tail or was
// recreated, offsets come again with another epoch. A receiver that
// dedups by chunk id must store those new chunks, not acknowledge them as
// the duplicates of what it stored under the same offsets before (issue
// 14: silent loss). A chunk resent in the same epoch is still stored once.
func TestReusedOffsetNewEpochIsStored(t *testing.T) {
	rec := newRecorder()
	in := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) { c.Dedup = true }, rec)
	dataDir := t.TempDir()
	o := newOutput(t, dataDir, nil, func(c *Config) { c.Servers = []string{in.Addr().String()} })
	mk := func(epoch uint64, tag string) []pipeline.Batch {
		var bs []pipeline.Batch
		for off := range uint64(5) {
			b := batch(1, 100+off, 10)
			b.Tag, b.Epoch = tag, epoch
			bs = append(bs, b)
		}
		return bs
	}
	deliverAll(t, o, mk(0, "before"), 10*time.Second) // written by an older release
	deliverAll(t, o, mk(0, "before"), 10*time.Second) // resent: stored once
	deliverAll(t, o, mk(1<<32|1, "epoch1"), 10*time.Second)
	deliverAll(t, o, mk(1<<32|1, "epoch1"), 10*time.Second)
	deliverAll(t, o, mk(2<<32|1, "epoch2"), 10*time.Second) // a recreated buffer
	want := map[string]int{"before": 50, "epoch1": 50, "epoch2": 50}
	got := map[string]int{}
	for tag, counts := range rec.tags() {
		for _, n := range counts {
			got[tag] += n
		}
	}
	if len(got) != len(want) || got["before"] != 50 || got["epoch1"] != 50 || got["epoch2"] != 50 {
		t.Fatalf("receiver stored %v, want %v (each chunk once)", got, want)
	}
}

func TestSharedKey(t *testing.T) {
	t.Run("right key and user", func(t *testing.T) {
		rec := newRecorder()
		in := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) {
			c.SharedKey = "s3cret"
			c.Users = []fwdin.User{{Username: "agent", Password: "pw"}}
		}, rec)
		o := newOutput(t, t.TempDir(), nil, func(c *Config) {
			c.Servers = []string{in.Addr().String()}
			c.SharedKey, c.Username, c.Password = "s3cret", "agent", "pw"
		})
		bs := batches(2, 3, 10)
		deliverAll(t, o, bs, 10*time.Second)
		checkAllArrived(t, bs, rec)
	})

	t.Run("wrong key is retried until the server is fixed", func(t *testing.T) {
		core, logs := observer.New(zap.ErrorLevel)
		rec := newRecorder()
		in := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) { c.SharedKey = "old-key" }, rec)
		addr := in.Addr().String()
		o := newOutput(t, t.TempDir(), zap.New(core), func(c *Config) {
			c.Servers = []string{addr}
			c.SharedKey = "new-key"
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		bs := batches(1, 2, 5)
		res := drive(ctx, o, bs)
		testutil.CheckFor(t, 5*time.Second, func() error {
			if n := testutil.Value(o.m.failures.WithLabelValues("fwd", addr, "auth")); n < 2 {
				return errors.New("no refused handshake retried yet")
			}
			return nil
		})
		expectNoResult(t, res, 50*time.Millisecond)
		if logs.FilterMessageSnippet("handshake refused").Len() == 0 {
			t.Fatalf("no clear log of the refused handshake: %v", logs.All())
		}
		if rec.count() != 0 {
			t.Fatal("events stored without a valid handshake")
		}
		// The server's key is fixed: delivery resumes by itself.
		_ = in.Stop(context.Background())
		rec2 := newRecorder()
		receiver(t, addr, func(c *fwdin.Config) { c.SharedKey = "new-key" }, rec2)
		for _, r := range waitResults(t, res, len(bs), 10*time.Second) {
			if r.err != nil {
				t.Fatal(r.err)
			}
		}
		checkAllArrived(t, bs, rec2)
	})

	t.Run("output has a key the server lacks", func(t *testing.T) {
		in := receiver(t, "127.0.0.1:0", nil, newRecorder())
		addr := in.Addr().String()
		o := newOutput(t, t.TempDir(), nil, func(c *Config) {
			c.Servers, c.SharedKey = []string{addr}, "k"
			c.ConnectTimeout = conftypes.Duration(100 * time.Millisecond)
		})
		ctx, cancel := context.WithCancel(context.Background())
		res := drive(ctx, o, batches(1, 1, 1))
		testutil.CheckFor(t, 5*time.Second, func() error {
			s := o.servers[0]
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.lastErr == nil || !strings.Contains(s.lastErr.Error(), "did not greet with HELO (is shared_key set on it?)") {
				return errors.New("no failure naming the missing HELO yet")
			}
			return nil
		})
		cancel()
		<-res
	})

	t.Run("server wants a key the output lacks", func(t *testing.T) {
		in := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) { c.SharedKey = "k" }, newRecorder())
		addr := in.Addr().String()
		o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{addr} })
		ctx, cancel := context.WithCancel(context.Background())
		res := drive(ctx, o, batches(1, 1, 1))
		testutil.CheckFor(t, 5*time.Second, func() error {
			s := o.servers[0]
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.lastErr == nil || !strings.Contains(s.lastErr.Error(), "shared_key") {
				return errors.New("no failure naming shared_key yet")
			}
			return nil
		})
		cancel()
		if r := <-res; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("done(%v), want context.Canceled", r.err)
		}
	})
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	rec := newRecorder()
	in := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) {
		c.TLS = conftypes.TLS{CertFile: cert, KeyFile: key, CAFile: cert} // client certificates required
		c.SharedKey = "k"
	}, rec)
	addr := in.Addr().String()
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{addr}
		c.TLS = conftypes.TLS{CAFile: cert, CertFile: cert, KeyFile: key}
		c.SharedKey = "k"
	})
	bs := batches(2, 4, 20)
	deliverAll(t, o, bs, 10*time.Second)
	checkAllArrived(t, bs, rec)

	// A server whose certificate is not trusted is a tls failure.
	other, _ := writeCert(t, t.TempDir())
	bad := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{addr}
		c.TLS = conftypes.TLS{CAFile: other, CertFile: cert, KeyFile: key}
	})
	ctx, cancel := context.WithCancel(context.Background())
	res := drive(ctx, bad, batches(1, 1, 1))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if testutil.Value(bad.m.failures.WithLabelValues("fwd", addr, "tls")) == 0 {
			return errors.New("no tls failure counted")
		}
		return nil
	})
	cancel()
	<-res
}

func TestRequireAckFalse(t *testing.T) {
	// A receiver that never acks: without require_ack, writing is enough,
	// and no chunk id is asked to be acknowledged.
	f := newFakeServer(t, ackNever)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{f.addr()}; c.RequireAck = false })
	bs := batches(2, 5, 10)
	deliverAll(t, o, bs, 10*time.Second)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := len(f.requests()); n != len(bs) {
			return errors.New("not every request arrived yet")
		}
		return nil
	})
	for _, r := range f.requests() {
		if r.hasChunk {
			t.Fatalf("%s sent with a chunk option though require_ack is false", r.tag)
		}
	}

	// And against our own input.
	rec := newRecorder()
	in := receiver(t, "127.0.0.1:0", nil, rec)
	o2 := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{in.Addr().String()}; c.RequireAck = false })
	deliverAll(t, o2, bs, 10*time.Second)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if rec.count() != len(bs)*10 {
			return errors.New("not every event stored yet")
		}
		return nil
	})
	if testutil.Value(o2.m.acks) != 0 {
		t.Fatal("acks counted without require_ack")
	}
}

// TestPartitionsSpreadOverServers: each partition goes to its first choice
// only (steered here to a, b, a, b), and with the output's own choices
// every partition still sticks to one server.
func TestPartitionsSpreadOverServers(t *testing.T) {
	recA, recB := newRecorder(), newRecorder()
	a := receiver(t, "127.0.0.1:0", nil, recA)
	b := receiver(t, "127.0.0.1:0", nil, recB)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{a.Addr().String(), b.Addr().String()} })
	steer(t, o, a.Addr().String(), b.Addr().String(), a.Addr().String(), b.Addr().String())
	bs := batches(4, 3, 5)
	deliverAll(t, o, bs, 10*time.Second)
	for _, bt := range bs {
		want, other := recA, recB
		if bt.Partition%2 == 1 {
			want, other = recB, recA
		}
		if len(want.tags()[bt.Tag]) != 1 || len(other.tags()[bt.Tag]) != 0 {
			t.Fatalf("partition %d's %s not on its preferred server only", bt.Partition, bt.Tag)
		}
	}

	recC, recD := newRecorder(), newRecorder()
	c := receiver(t, "127.0.0.1:0", nil, recC)
	d := receiver(t, "127.0.0.1:0", nil, recD)
	o2 := newOutput(t, t.TempDir(), nil, func(cf *Config) { cf.Servers = []string{c.Addr().String(), d.Addr().String()} })
	bs = batches(8, 3, 5)
	deliverAll(t, o2, bs, 10*time.Second)
	onC := map[int]int{}
	onD := map[int]int{}
	for _, bt := range bs {
		onC[bt.Partition] += len(recC.tags()[bt.Tag])
		onD[bt.Partition] += len(recD.tags()[bt.Tag])
	}
	for p := range 8 {
		if onC[p]+onD[p] != 3 || (onC[p] != 0 && onD[p] != 0) {
			t.Fatalf("partition %d: %d chunks on c, %d on d; want its 3 on one server", p, onC[p], onD[p])
		}
	}
}

// TestFailoverWhenReceiverDiesMidStream: one of two receivers dies with
// chunks in flight on it (read, never stored nor acked); they and
// everything after them arrive at the other one: nothing is lost.
func TestFailoverWhenReceiverDiesMidStream(t *testing.T) {
	recA, recB := newRecorder(), newRecorder()
	// a holds what comes after its first 30 chunks (of its 120): set
	// before the run, as a hold set later could come after a had
	// already acked them all (the results are buffered).
	recA.holdAfter = 30
	a := receiver(t, "127.0.0.1:0", nil, recA)
	b := receiver(t, "127.0.0.1:0", nil, recB)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{a.Addr().String(), b.Addr().String()}
		c.MaxInFlight = 4
	})
	steer(t, o, a.Addr().String(), b.Addr().String(), a.Addr().String(), b.Addr().String())
	bs := batches(4, 60, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := drive(ctx, o, bs)
	got := waitResults(t, res, len(bs)/4, 10*time.Second)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if recA.holding() < 4 {
			return errors.New("not enough chunks in flight on a yet")
		}
		return nil
	})
	// Kill a: what it holds is never stored, and it stops at once.
	recA.fail(errors.New("receiver killed"))
	dead, stop := context.WithCancel(context.Background())
	stop()
	_ = a.Stop(dead)
	got = append(got, waitResults(t, res, len(bs)-len(got), 15*time.Second)...)
	for _, r := range got {
		if r.err != nil {
			t.Fatalf("%s: %v", r.b.Tag, r.err)
		}
	}
	checkAllArrived(t, bs, recA, recB)
	if testutil.Value(o.m.failures) == 0 || testutil.Value(o.set.Metrics.Retries) < 4 {
		t.Fatal("the receiver's death went uncounted")
	}
	if testutil.Value(o.m.up.WithLabelValues("fwd", a.Addr().String())) != 0 {
		t.Fatal("server_up still 1 for the dead receiver")
	}
}

// TestFailedServerDoesNotStallItsPartition: while a down server is being
// redialed (and the attempt hangs until connect_timeout), the chunks of
// the partition that prefers it flow to the next server without waiting.
func TestFailedServerDoesNotStallItsPartition(t *testing.T) {
	hang := newFakeServer(t, silent)
	rec := newRecorder()
	good := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) { c.SharedKey = "k" }, rec)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{hang.addr(), good.Addr().String()}
		c.SharedKey = "k"
		c.ConnectTimeout = conftypes.Duration(20 * time.Second)
	})
	steer(t, o, hang.addr())
	deliverAll(t, o, []pipeline.Batch{batch(0, 0, 1)}, 5*time.Second) // fails over after the first, refused, connection
	testutil.CheckFor(t, 5*time.Second, func() error {
		if hang.seen.Load() < 2 {
			return errors.New("no redial of the failed server yet")
		}
		return nil
	})
	var bs []pipeline.Batch
	for i := range 20 {
		bs = append(bs, batch(0, uint64(1+i), 1))
	}
	start := time.Now()
	deliverAll(t, o, bs, 10*time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("partition 0 stalled %s behind the hanging redial", d)
	}
	checkAllArrived(t, bs, rec)
}

// TestReceiverDownAtStartComesUpLater: delivery resumes by itself.
func TestReceiverDownAtStartComesUpLater(t *testing.T) {
	addr := testutil.FreeAddr(t)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{addr} })
	bs := batches(2, 5, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := drive(ctx, o, bs)
	waitConnectRetries(t, o, addr)
	expectNoResult(t, res, 10*time.Millisecond)
	rec := newRecorder()
	receiver(t, addr, nil, rec)
	for _, r := range waitResults(t, res, len(bs), 10*time.Second) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	checkAllArrived(t, bs, rec)
	if testutil.Value(o.m.up) != 1 {
		t.Fatal("server_up not back to 1")
	}
}

// TestMaxInFlightBytesBoundsWhatIsHeld: while the receiver is down, the
// chunks the output holds stay within max_in_flight_bytes (WriteAsync
// blocks the caller instead of taking more), a chunk larger than the bound
// still goes alone, and everything is delivered once the receiver is up.
func TestMaxInFlightBytesBoundsWhatIsHeld(t *testing.T) {
	addr := testutil.FreeAddr(t)
	const limit = 64 << 10
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{addr}; c.MaxInFlightBytes = limit })
	bs := batches(4, 10, 100) // about 7KiB each: 40 of them are 4 times the bound
	big := batch(1, 200, 2000)
	if len(big.Entries) <= limit {
		t.Fatalf("the big chunk has %d bytes, not more than the bound", len(big.Entries))
	}
	bs = append(bs, big)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			n := o.held.inUse()
			if n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	res := drive(ctx, o, bs)
	waitConnectRetries(t, o, addr)
	expectNoResult(t, res, 50*time.Millisecond)
	if n := o.held.inUse(); n == 0 || n > limit {
		t.Fatalf("the output holds %d bytes while the receiver is down; want 1 to %d", n, limit)
	}
	rec := newRecorder()
	receiver(t, addr, nil, rec)
	for _, r := range waitResults(t, res, len(bs), 10*time.Second) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	close(stop)
	<-sampled
	checkAllArrived(t, bs, rec)
	if p := peak.Load(); p > int64(len(big.Entries)) && p > limit {
		t.Fatalf("peak held %d bytes: more than max_in_flight_bytes (%d) and more than the big chunk alone (%d)", p, limit, len(big.Entries))
	}
	if n := o.held.inUse(); n != 0 {
		t.Fatalf("%d bytes still held after every chunk was delivered", n)
	}
}

// TestResendAfterCrashStoredOnce: a second output instance on the same
// data_dir (a restart after a crash) resends (partition, offset) with the
// same chunk id, and the receiver's dedup stores it once.
func TestResendAfterCrashStoredOnce(t *testing.T) {
	rec := newRecorder()
	in := receiver(t, "127.0.0.1:0", nil, rec)
	dir := t.TempDir()
	mod := func(c *Config) { c.Servers = []string{in.Addr().String()} }
	o1 := newOutput(t, dir, nil, mod)
	deliverAll(t, o1, []pipeline.Batch{batch(1, 7, 10)}, 5*time.Second)
	_ = o1.Stop(context.Background()) // "crash": the cursor never moved

	o2 := newOutput(t, dir, nil, mod)
	if o1.SenderID() != o2.SenderID() {
		t.Fatalf("sender id changed across a restart: %x then %x", o1.SenderID(), o2.SenderID())
	}
	deliverAll(t, o2, []pipeline.Batch{batch(1, 7, 10), batch(1, 8, 10)}, 5*time.Second)
	if got := rec.tags(); len(got[tagOf(1, 7)]) != 1 || len(got[tagOf(1, 8)]) != 1 || rec.count() != 20 {
		t.Fatalf("stored %v (%d events): want each chunk once", got, rec.count())
	}
}

// TestAckTimeout: a receiver that reads but never acks gets the chunk
// again on a new connection, with the same id; done(nil) comes only once
// a real ack does.
func TestAckTimeout(t *testing.T) {
	f := newFakeServer(t, ackNever)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{f.addr()}
		c.AckTimeout = conftypes.Duration(100 * time.Millisecond)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := batch(3, 42, 5)
	res := drive(ctx, o, []pipeline.Batch{b})
	testutil.CheckFor(t, 5*time.Second, func() error {
		if f.seen.Load() < 3 || testutil.Value(o.m.failures.WithLabelValues("fwd", f.addr(), "ack_timeout")) < 2 {
			return errors.New("no reconnect after ack timeouts yet")
		}
		return nil
	})
	expectNoResult(t, res, 10*time.Millisecond)
	f.mode.Store(ackNow)
	if r := waitResults(t, res, 1, 5*time.Second)[0]; r.err != nil {
		t.Fatal(r.err)
	}
	id := forwardproto.ChunkID(o.SenderID(), 3, 42)
	for _, r := range f.requests() {
		if r.chunk != id {
			t.Fatalf("resent with chunk id %q, want %q", r.chunk, id)
		}
	}
	if testutil.Value(o.set.Metrics.Retries) < 2 {
		t.Fatal("retries not counted")
	}
}

// TestCancelEndsDeliveriesPromptly: chunks waiting for acks, and chunks
// stuck in a write the receiver does not read, end with ctx's error as
// soon as ctx is cancelled.
func TestCancelEndsDeliveriesPromptly(t *testing.T) {
	for _, mode := range []int{ackNever, noRead} {
		t.Run(map[int]string{ackNever: "waiting for acks", noRead: "blocked writing"}[mode], func(t *testing.T) {
			f := newFakeServer(t, mode)
			o := newOutput(t, t.TempDir(), nil, func(c *Config) {
				c.Servers = []string{f.addr()}
				c.Compress = "none"
			})
			var bs []pipeline.Batch
			for i := range 12 {
				b := pipeline.Batch{Chunk: pipeline.Chunk{Tag: "big", Entries: makeEntries(2000, 1000), Count: 2000}, Offset: uint64(i)}
				bs = append(bs, b)
			}
			ctx, cancel := context.WithCancel(context.Background())
			res := drive(ctx, o, bs)
			testutil.CheckFor(t, 5*time.Second, func() error {
				if f.seen.Load() == 0 || testutil.Value(o.m.inflight) == 0 {
					return errors.New("nothing in flight yet")
				}
				return nil
			})
			expectNoResult(t, res, 50*time.Millisecond)
			cancel()
			for _, r := range waitResults(t, res, len(bs), 2*time.Second) {
				if !errors.Is(r.err, context.Canceled) {
					t.Fatalf("done(%v), want context.Canceled", r.err)
				}
			}
		})
	}
}

// TestStopEndsDeliveries: Stop with chunks in flight ends them with
// ErrStopped (not permanent: they stay buffered) and leaves no goroutine.
func TestStopEndsDeliveries(t *testing.T) {
	f := newFakeServer(t, ackNever)
	down := testutil.FreeAddr(t)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{f.addr(), down} })
	res := drive(context.Background(), o, batches(2, 4, 5))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if len(f.requests()) < 4 {
			return errors.New("not in flight yet")
		}
		return nil
	})
	_ = o.Stop(context.Background())
	for _, r := range waitResults(t, res, 8, 2*time.Second) {
		if r.err == nil || pipeline.IsPermanent(r.err) {
			t.Fatalf("done(%v) on stop: want a retryable error", r.err)
		}
	}
	called := false
	o.WriteAsync(context.Background(), batch(0, 1, 1), func(err error) { called = errors.Is(err, ErrStopped) })
	if !called {
		t.Fatal("WriteAsync after Stop did not answer ErrStopped at once")
	}
}

func TestSenderIDPersisted(t *testing.T) {
	dir := t.TempDir()
	id1, err := loadSenderID(dir, "out", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "output", "out", senderIDFile)
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 13 {
		t.Fatalf("sender-id file %q (%v)", b, err)
	}
	id2, _ := loadSenderID(dir, "out", zap.NewNop())
	if id1 != id2 {
		t.Fatal("sender id not reused")
	}
	if other, _ := loadSenderID(dir, "other", zap.NewNop()); other == id1 {
		t.Fatal("two outputs share a sender id")
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	id3, err := loadSenderID(dir, "out", zap.NewNop())
	if err != nil || id3 == id1 {
		t.Fatalf("damaged file: id %x, %v", id3, err)
	}
	if id4, _ := loadSenderID(dir, "out", zap.NewNop()); id4 != id3 {
		t.Fatal("replacement id not persisted")
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, "output", "out", "*.tmp"))
	if len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func(c *Config) {}
	cases := []struct {
		name string
		mod  func(*Config)
		want []string // fields named in the error; none means valid
	}{
		{"defaults with a server", ok, nil},
		{"no servers", func(c *Config) { c.Servers = nil }, []string{"servers"}},
		{"bad servers", func(c *Config) { c.Servers = []string{"nohost", "h:0", "h:99999", "a:1", "a:1"} }, []string{"servers: [0]", "servers: [1]", "servers: [2]", "servers: [4]"}},
		{"compress", func(c *Config) { c.Compress = "lz4" }, []string{"compress"}},
		{"timeouts", func(c *Config) { c.AckTimeout, c.ConnectTimeout, c.TCPKeepalive = 0, -1, -1 }, []string{"ack_timeout", "connect_timeout", "tcp_keepalive"}},
		{"retries", func(c *Config) { c.RetryMin, c.RetryMax = 0, -1 }, []string{"retry_min", "retry_max"}},
		{"retry_max below retry_min", func(c *Config) { c.RetryMax = conftypes.Duration(time.Millisecond) }, []string{"retry_max"}},
		{"max_in_flight", func(c *Config) { c.MaxInFlight = 0 }, []string{"max_in_flight"}},
		{"max_in_flight_bytes too small", func(c *Config) { c.MaxInFlightBytes = 1 << 10 }, []string{"max_in_flight_bytes"}},
		{"max_in_flight_bytes too large", func(c *Config) { c.MaxInFlightBytes = 8 << 30 }, []string{"max_in_flight_bytes"}},
		{"user without key", func(c *Config) { c.Username, c.Password = "u", "p" }, []string{"username"}},
		{"password without user", func(c *Config) { c.SharedKey, c.Password = "k", "p" }, []string{"password"}},
		{"tls half a pair", func(c *Config) { c.TLS.CertFile = "x" }, []string{"tls"}},
		{"everything set", func(c *Config) {
			c.Servers = []string{"a:1", "[::1]:24224"}
			c.SharedKey, c.Username, c.Password, c.Compress = "k", "u", "p", "none"
			c.TLS = conftypes.TLS{CAFile: "ca", CertFile: "c", KeyFile: "k"}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Factory().NewConfig().(*Config)
			c.Servers = []string{"127.0.0.1:24224"}
			tc.mod(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if fe := new(pipeline.FieldError); !errors.As(err, &fe) {
				t.Errorf("error %q holds no FieldError", err)
			}
		})
	}
	f := Factory()
	if f.Type != "forward" || f.Kind != pipeline.KindOutput {
		t.Fatalf("factory %s/%s", f.Type, f.Kind)
	}
	d := f.NewConfig().(*Config)
	if !d.RequireAck || d.Compress != "none" || d.MaxInFlight != 16 || d.MaxInFlightBytes != 8<<20 || d.AckTimeout.D() != 30*time.Second {
		t.Fatalf("defaults %+v", d)
	}
	var _ pipeline.PipelinedOutput = (*Output)(nil)
}

// writeCert writes a self-signed CA certificate valid for 127.0.0.1 and
// localhost, used as the server's, the client's and the trusted CA.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "logship test"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestCancelAnswersOnlyAfterTheWrite: a chunk whose frame is written from
// its entries themselves (uncompressed, plain TCP) and whose context is
// cancelled while the write is blocked is answered only once the write
// returned: the runner reuses the entries' memory as soon as done is
// called, and a write still reading them would send other bytes under the
// chunk's id.
func TestCancelAnswersOnlyAfterTheWrite(t *testing.T) {
	f := newFakeServer(t, noRead)
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{f.addr()}
		c.Compress = "none"
		c.MaxInFlightBytes = 64 << 20
	})
	var wrote atomic.Bool
	fastWrote = func() {
		time.Sleep(100 * time.Millisecond) // a write that takes a while to return
		wrote.Store(true)
	}
	defer func() { fastWrote = nil }()
	// the first chunk opens the connection (deliver), and waits for an ack
	res := drive(context.Background(), o, []pipeline.Batch{batch(0, 1, 1)})
	testutil.CheckFor(t, 5*time.Second, func() error {
		if testutil.Value(o.m.inflight) != 1 {
			return errors.New("the first chunk is not in flight yet")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	big := pipeline.Batch{Chunk: pipeline.Chunk{Tag: "big", Entries: makeEntries(32000, 1000), Count: 32000}, Partition: 1, Offset: 1}
	answered := make(chan bool, 1)
	// the fast path writes on WriteAsync's caller, and the frame does not
	// fit the socket: the write blocks
	go o.WriteAsync(ctx, big, func(err error) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("done(%v), want context.Canceled", err)
		}
		answered <- wrote.Load()
	})
	testutil.CheckFor(t, 5*time.Second, func() error {
		if testutil.Value(o.m.inflight) != 2 {
			return errors.New("the big chunk is not in flight yet")
		}
		return nil
	})
	cancel()
	select {
	case afterWrite := <-answered:
		if !afterWrite {
			t.Fatal("done was called while the frame was still being written")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer after the cancel")
	}
	_ = o.Stop(context.Background())
	waitResults(t, res, 1, 5*time.Second)
}

// TestMaxInFlightBytesCountsHeldMemory: what bounds the chunks in flight
// is the memory each pins (Batch.Held, the buffer's pooled read memory
// behind its entries), not only its events: with chunks of about 7KiB of
// events pinning 40KiB each and a 64KiB bound, one is held at a time
// while the receiver is down. Before, nine were (63KiB of events, 360KiB
// of memory).
func TestMaxInFlightBytesCountsHeldMemory(t *testing.T) {
	addr := testutil.FreeAddr(t)
	const limit, held = 64 << 10, 40 << 10
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{addr}; c.MaxInFlightBytes = limit })
	bs := batches(4, 10, 100)
	for i := range bs {
		if len(bs[i].Entries) >= held {
			t.Fatalf("batch of %d bytes, not less than what it pins", len(bs[i].Entries))
		}
		bs[i].Held = held
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := drive(ctx, o, bs)
	waitConnectRetries(t, o, addr)
	expectNoResult(t, res, 50*time.Millisecond)
	if n := o.held.inUse(); n != held {
		t.Fatalf("the output holds %d bytes while the receiver is down; want one chunk's %d", n, held)
	}
	rec := newRecorder()
	receiver(t, addr, nil, rec)
	for _, r := range waitResults(t, res, len(bs), 10*time.Second) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	checkAllArrived(t, bs, rec)
	if n := o.held.inUse(); n != 0 {
		t.Fatalf("%d bytes still held after every chunk was delivered", n)
	}
}

// waitConnectRetries waits until the output has failed to connect to addr
// three times: it is retrying a receiver that is down.
func waitConnectRetries(t *testing.T, o *Output, addr string) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if testutil.Value(o.m.failures.WithLabelValues("fwd", addr, "connect")) < 3 {
			return errors.New("not retrying the connection yet")
		}
		return nil
	})
}
