package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	fwdout "github.com/logship/logship/plugins/output/forward"
)

// flood sends n one-event chunks named like a logship sender's (sender
// id, partition 0, offsets 0..n-1) on one connection, pipelined, and
// returns once all were acknowledged: the load of other senders.
func flood(c net.Conn, sender byte, n int) error {
	errc := make(chan error, 1)
	go func() {
		dec := msgpack.NewDecoder(bufio.NewReader(c))
		for i := range n {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var m map[string]string
			if err := dec.Decode(&m); err != nil {
				errc <- fmt.Errorf("ack %d of %d: %w", i, n, err)
				return
			}
		}
		errc <- nil
	}()
	w := bufio.NewWriter(c)
	id := [6]byte{0xf1, sender}
	for i := range n {
		b, err := msgpack.Marshal([]any{"flood", 1700000000, map[string]any{"i": i}, map[string]any{"chunk": forwardproto.EpochChunkID(id, 1, 0, uint64(i))}})
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return <-errc
}

// sendBatches hands bs to a forward output as the runner does (in order,
// at most MaxInFlight at once) and waits for every one to be delivered.
func sendBatches(t *testing.T, o *fwdout.Output, bs []pipeline.Batch) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sem := make(chan struct{}, o.MaxInFlight())
	errc := make(chan error, len(bs))
	for _, b := range bs {
		sem <- struct{}{}
		o.WriteAsync(ctx, b, func(err error) {
			errc <- err
			<-sem
		})
	}
	for range bs {
		if err := <-errc; err != nil {
			t.Fatalf("delivery: %v", err)
		}
	}
}

// senderOutput starts a logship forward output to in on dataDir (which
// keeps its sender id across "crashes").
func senderOutput(t *testing.T, in *Input, dataDir string) *fwdout.Output {
	t.Helper()
	cfg := fwdout.Factory().NewConfig().(*fwdout.Config)
	cfg.Servers, cfg.SelfHostname = []string{in.Addr().String()}, "sender"
	cfg.RetryMin, cfg.RetryMax = conftypes.Duration(10*time.Millisecond), conftypes.Duration(100*time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	o, err := fwdout.New(pipeline.Settings{Name: "out", Type: "forward", DataDir: dataDir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "out")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	return o
}

func senderBatch(off uint64) pipeline.Batch {
	var e []byte
	for i := range 5 {
		rec := mpack.AppendMapHeader(nil, 1)
		rec = mpack.AppendString(rec, "i")
		rec = mpack.AppendInt(rec, int64(i))
		e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000}, rec)
	}
	return pipeline.Batch{Chunk: pipeline.Chunk{Tag: fmt.Sprintf("s.%d", off), Entries: e, Count: 5}, Partition: 0, Offset: off, Epoch: 42}
}

// TestSenderCrashResendStoredOnce: a real forward output delivers 40
// chunks, acknowledged; 150000 chunks of other senders follow (more than
// the 100000 ids the window held before dedup_retention: they pushed the
// sender's ids out); then the sender "crashes" with its cursor persisted
// 16 + 8 chunks back (max_in_flight unacknowledged plus those acknowledged
// in the last cursor flush) and, restarted on the same data_dir, resends
// them with new ones. Every event is stored once, the resends are counted
// as duplicates (events), and no id was forgotten within dedup_retention.
func TestSenderCrashResendStoredOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("150000 chunks")
	}
	em := &testEmitter{}
	in, reg := startInputReg(t, nil, em)
	// The forward_in_* vectors are shared by every input of the process
	// (their children by component name): compare with their values now.
	want := map[string]string{"component": "fwd"}
	dupsBefore := metricValue(t, reg, "logship_forward_in_duplicate_chunks_total", want)
	earlyBefore := metricValue(t, reg, "logship_forward_in_dedup_evicted_early_total", want)
	dir := t.TempDir()
	const n, k, fresh = 40, 24, 10
	var first []pipeline.Batch
	for off := range uint64(n) {
		first = append(first, senderBatch(off))
	}
	o1 := senderOutput(t, in, dir)
	sendBatches(t, o1, first)
	_ = o1.Stop(context.Background()) // the crash: the cursor stays at n-k

	const senders, perSender = 6, 25000
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		c := dial(t, in)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := flood(c, byte(s), perSender); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	o2 := senderOutput(t, in, dir)
	var again []pipeline.Batch
	for off := uint64(n - k); off < n+fresh; off++ {
		again = append(again, senderBatch(off))
	}
	sendBatches(t, o2, again)
	counts := map[string]int{}
	em.mu.Lock()
	for _, c := range em.chunks {
		counts[c.Tag]++
	}
	em.mu.Unlock()
	for off := range n + fresh {
		if got := counts[fmt.Sprintf("s.%d", off)]; got != 1 {
			t.Errorf("chunk at offset %d stored %d times", off, got)
		}
	}
	if got := counts["flood"]; got != senders*perSender {
		t.Errorf("%d flood chunks stored, want %d", got, senders*perSender)
	}
	if got := metricValue(t, reg, "logship_duplicates_suppressed_total", want); got != k*5 {
		t.Errorf("duplicates_suppressed_total %v, want %d (events of the resent chunks)", got, k*5)
	}
	if got := metricValue(t, reg, "logship_forward_in_duplicate_chunks_total", want) - dupsBefore; got != k {
		t.Errorf("forward_in_duplicate_chunks_total %v, want %d", got, k)
	}
	if got := metricValue(t, reg, "logship_forward_in_dedup_evicted_early_total", want) - earlyBefore; got != 0 {
		t.Errorf("%v ids forgotten before dedup_retention with the default window", got)
	}
}

// TestDedupWindowTooSmallWarned: with a window smaller than what arrives
// within dedup_retention, every id forgotten early is counted in
// forward_in_dedup_evicted_early_total and a warning naming dedup_window is
// logged, at most once per 10s; a resend of a forgotten id is stored again
// (the documented price of a too small window).
func TestDedupWindowTooSmallWarned(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	em := &testEmitter{}
	reg := prometheus.NewRegistry()
	cfg := defaultConfig()
	cfg.Listen, cfg.DedupWindow, cfg.DedupRetention = "127.0.0.1:0", 10, conftypes.Duration(time.Hour)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	set := pipeline.Settings{Name: "fwd", Type: "forward", DataDir: t.TempDir(), Logger: zap.New(core), Metrics: pipeline.NewMetrics(reg).Component(pipeline.KindInput, "fwd", "forward")}
	in, err := New(set, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), em); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Stop(context.Background()) })
	want := map[string]string{"component": "fwd"}
	before := metricValue(t, reg, "logship_forward_in_dedup_evicted_early_total", want) // shared by the process's inputs
	waitGood(t, em, goodClient(t, in, "w", 15), "w", 15)
	if got := metricValue(t, reg, "logship_forward_in_dedup_evicted_early_total", want) - before; got != 5 {
		t.Fatalf("dedup_evicted_early_total %v, want 5", got)
	}
	warned := logs.FilterMessageSnippet("dedup_window is too small").All()
	if len(warned) != 1 {
		t.Fatalf("%d warnings, want 1 (rate-limited): %v", len(warned), logs.All())
	}
	if f := warned[0].ContextMap(); f["dedup_window"] != int64(10) || f["dedup_retention"] != time.Hour {
		t.Fatalf("warning fields %v", f)
	}
	if got := metricValue(t, reg, "logship_forward_in_dedup_horizon_seconds", want); got <= 0 || got > 60 {
		t.Fatalf("dedup_horizon_seconds %v", got)
	}
	// w-0 was forgotten: its resend is stored again; w-14 is not.
	c := dial(t, in)
	for _, id := range []string{"w-0", "w-14"} {
		if _, err := c.Write(mp(t, []any{"w", 1700000000, map[string]any{"i": 0}, map[string]any{"chunk": id}})); err != nil {
			t.Fatal(err)
		}
		if got, err := readAck(t, c, 2*time.Second); err != nil || got != id {
			t.Fatalf("ack %q %v", got, err)
		}
	}
	if n := em.tagCount("w"); n != 16 {
		t.Fatalf("%d events stored, want 16 (w-0 again, w-14 not)", n)
	}
}

// TestResendWhileFirstCopyStored: a resend arriving on a second connection
// while the first copy still waits for the buffer is not stored, waits,
// and gets the first copy's answer: an ack once it is stored; nothing
// while it is not (a retryable failure: both copies stay unacknowledged
// and the client resends).
func TestResendWhileFirstCopyStored(t *testing.T) {
	em := &testEmitter{hold: true}
	in, reg := startInputReg(t, nil, em)
	t.Cleanup(em.release)
	req := func(id string) []byte {
		var entries []byte
		for i := range 3 {
			entries = append(entries, mp(t, []any{1700000000, map[string]any{"i": i}})...)
		}
		return mp(t, []any{"r", entries, map[string]any{"chunk": id}})
	}
	c1, c2 := dial(t, in), dial(t, in)
	if _, err := c1.Write(req("x")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 2*time.Second, func() error {
		if em.count() != 3 {
			return errors.New("first copy not emitted")
		}
		return nil
	})
	if _, err := c2.Write(req("x")); err != nil {
		t.Fatal(err)
	}
	if id, err := readAck(t, c2, 300*time.Millisecond); err == nil {
		t.Fatalf("resend acknowledged (%q) before the first copy was stored", id)
	}
	em.release()
	for i, c := range []net.Conn{c1, c2} {
		if id, err := readAck(t, c, 2*time.Second); err != nil || id != "x" {
			t.Fatalf("connection %d: ack %q %v", i+1, id, err)
		}
	}
	if n := em.count(); n != 3 {
		t.Fatalf("%d events stored, want 3 (once)", n)
	}
	want := map[string]string{"component": "fwd"}
	if got := metricValue(t, reg, "logship_duplicates_suppressed_total", want); got != 3 {
		t.Fatalf("duplicates_suppressed_total %v, want 3", got)
	}

	// The first copy fails (retryable): the waiting resend is not
	// acknowledged either, and a later resend is stored.
	fail := &failOnce{testEmitter: &testEmitter{hold: true}}
	in2, reg2 := startInputReg(t, nil, fail)
	t.Cleanup(fail.release)
	d1, d2 := dial(t, in2), dial(t, in2)
	if _, err := d1.Write(req("y")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 2*time.Second, func() error {
		if fail.count() != 3 {
			return errors.New("first copy not emitted")
		}
		return nil
	})
	if _, err := d2.Write(req("y")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the resend reach the input and wait
	fail.failHeld(errors.New("disk error"))
	for i, c := range []net.Conn{d1, d2} {
		if id, err := readAck(t, c, 300*time.Millisecond); err == nil {
			t.Fatalf("connection %d: acknowledged %q, not stored", i+1, id)
		}
	}
	if _, err := d2.Write(req("y")); err != nil {
		t.Fatal(err)
	}
	if id, err := readAck(t, d2, 2*time.Second); err != nil || id != "y" {
		t.Fatalf("resend after the failure: ack %q %v", id, err)
	}
	if got := metricValue(t, reg2, "logship_duplicates_suppressed_total", want); got != 0 {
		t.Fatalf("duplicates_suppressed_total %v, want 0", got)
	}
}

// failOnce holds chunks like testEmitter; failHeld refuses those held and
// stores the later ones.
type failOnce struct {
	*testEmitter
}

func (f *failOnce) failHeld(err error) {
	f.mu.Lock()
	p := f.pending
	f.pending, f.hold = nil, false
	f.mu.Unlock()
	for _, a := range p {
		a(err)
	}
}

// TestDedupRetentionConfig: dedup_retention is bounded, defaults to 10m,
// and is not checked while dedup is off.
func TestDedupRetentionConfig(t *testing.T) {
	if d := defaultConfig().DedupRetention.D(); d != 10*time.Minute {
		t.Fatalf("default dedup_retention %v", d)
	}
	for _, d := range []time.Duration{0, 999 * time.Millisecond, 25 * time.Hour} {
		cfg := defaultConfig()
		cfg.DedupRetention = conftypes.Duration(d)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "dedup_retention") {
			t.Errorf("%v: %v", d, err)
		}
	}
	cfg := defaultConfig()
	cfg.Dedup, cfg.DedupRetention = false, 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
