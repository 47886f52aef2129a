package tail

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

// rec is one emitted event, decoded.
type rec struct {
	tag   string
	time  mpack.EventTime
	m     map[string]any
	chunk int // the emit index of its chunk
}

func (r rec) log() string { s, _ := r.m["log"].(string); return s }

func decodeChunk(t testing.TB, c pipeline.Chunk) []rec {
	var out []rec
	err := mpack.ForEachEntry(c.Entries, func(tm mpack.EventTime, record []byte) error {
		var m map[string]any
		if err := msgpack.Unmarshal(record, &m); err != nil {
			return err
		}
		out = append(out, rec{tag: c.Tag, time: tm, m: m})
		return nil
	})
	if err != nil {
		t.Errorf("chunk does not decode: %v", err)
	}
	if len(out) != c.Count {
		t.Errorf("chunk says %d events, holds %d", c.Count, len(out))
	}
	return out
}

// testEmitter records chunks and acknowledges them: at once, after a
// delay, or when released; fail decides which chunks are not stored.
type testEmitter struct {
	t       testing.TB
	mu      sync.Mutex
	emitted []rec // every event handed over, stored or not
	durable []rec // events of chunks acknowledged with nil
	nChunks int   // chunks emitted
	fail    func(n int, recs []rec) bool
	failed  [][]rec // chunks not stored
	delay   time.Duration
	delayFn func() time.Duration // when set, the delay of each ack
	hold    bool
	held    []func()
	block   chan struct{}     // when not nil, Emit waits for it to close
	emitErr func(n int) error // when set and not nil, Emit refuses chunk n
	ackErr  error             // when set, what failed chunks are acked with
	refused int
	sizes   []int                  // len(Entries) of every chunk handed over
	taken   func(c pipeline.Chunk) // when set, sees every chunk Emit takes (under mu)
	wg      sync.WaitGroup
}

func newEmitter(t testing.TB) *testEmitter { return &testEmitter{t: t} }

func (e *testEmitter) Emit(ctx context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	e.mu.Lock()
	block := e.block
	e.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	recs := decodeChunk(e.t, c)
	e.mu.Lock()
	e.sizes = append(e.sizes, len(c.Entries))
	if e.emitErr != nil {
		if err := e.emitErr(e.nChunks + e.refused); err != nil {
			e.refused++
			e.mu.Unlock()
			return err
		}
	}
	if e.taken != nil {
		e.taken(c)
	}
	n := e.nChunks
	e.nChunks++
	for i := range recs {
		recs[i].chunk = n
	}
	e.emitted = append(e.emitted, recs...)
	failed := e.fail != nil && e.fail(n, recs)
	if failed {
		e.failed = append(e.failed, recs)
	}
	delay := e.delay
	if e.delayFn != nil {
		delay = e.delayFn()
	}
	finish := func() {
		if !failed {
			e.mu.Lock()
			e.durable = append(e.durable, recs...)
			e.mu.Unlock()
			ack(nil)
			return
		}
		if e.ackErr != nil {
			ack(fmt.Errorf("chunk %d: %w", n, e.ackErr))
			return
		}
		ack(fmt.Errorf("chunk %d not stored (test)", n))
	}
	switch {
	case e.hold:
		e.held = append(e.held, finish)
		e.mu.Unlock()
	case delay > 0:
		e.mu.Unlock()
		e.wg.Add(1)
		time.AfterFunc(delay, func() { defer e.wg.Done(); finish() })
	default:
		e.mu.Unlock()
		finish()
	}
	return nil
}

// release acknowledges held chunks, in the order given by idx (all, in
// emit order, when idx is empty).
func (e *testEmitter) release(idx ...int) {
	e.mu.Lock()
	held := e.held
	if len(idx) == 0 {
		e.held = nil
	} else {
		var rest []func()
		pick := map[int]bool{}
		for _, i := range idx {
			pick[i] = true
		}
		for i, f := range held {
			if !pick[i] {
				rest = append(rest, f)
			}
		}
		e.held = rest
	}
	e.mu.Unlock()
	if len(idx) == 0 {
		for _, f := range held {
			f()
		}
		return
	}
	for _, i := range idx {
		held[i]()
	}
}

func (e *testEmitter) heldCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.held)
}

func (e *testEmitter) records() []rec {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]rec(nil), e.durable...)
}

func (e *testEmitter) logs() []string {
	var out []string
	for _, r := range e.records() {
		out = append(out, r.log())
	}
	return out
}

func (e *testEmitter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.durable)
}

// stays checks that fn keeps returning nil for d (for "nothing happens").
func stays(t testing.TB, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// harness runs one input over a directory of logs.
type harness struct {
	t    testing.TB
	dir  string // the logs
	data string // data_dir
	cfg  *Config
	e    *testEmitter
	in   *Input
	reg  *pipeline.Metrics
}

func testConfig(dir string) *Config {
	c := defaultConfig()
	c.Paths = []string{filepath.Join(dir, "*.log")}
	c.RefreshInterval = conftypes.Duration(50 * time.Millisecond)
	c.RotateWait = conftypes.Duration(200 * time.Millisecond)
	c.Batch.FlushInterval = 0
	c.ReadFromHead = true
	return c
}

func newHarness(t testing.TB, mod func(c *Config)) *harness {
	h := &harness{t: t, dir: t.TempDir(), data: t.TempDir()}
	h.cfg = testConfig(h.dir)
	if mod != nil {
		mod(h.cfg)
	}
	h.e = newEmitter(t)
	t.Cleanup(func() {
		h.stop()
		h.e.wg.Wait()
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	if err := h.cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	h.reg = pipeline.NewMetrics(nil)
	set := pipeline.Settings{
		Name:    "tail.test",
		Type:    "tail",
		Role:    "agent",
		DataDir: h.data,
		Logger:  zaptest.NewLogger(h.t, zaptest.Level(zap.InfoLevel)),
		Metrics: h.reg.Component(pipeline.KindInput, "tail.test", "tail"),
	}
	in, err := New(set, h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := in.Start(context.Background(), h.e); err != nil {
		h.t.Fatal(err)
	}
	h.in = in
}

func (h *harness) stop() {
	if h.in == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.in.Stop(ctx); err != nil {
		h.t.Errorf("stop: %v", err)
	}
	h.in = nil
}

func (h *harness) path(name string) string { return filepath.Join(h.dir, name) }

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// lines returns "prefix-i\n" for i in [from, to).
func lines(prefix string, from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "%s-%06d\n", prefix, i)
	}
	return b.String()
}

func want(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%06d", prefix, i))
	}
	return out
}

// exactlyOnce checks that got holds every string of want once and
// nothing else (any order).
func exactlyOnce(got, want []string) error {
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	var missing, dups []string
	for _, w := range want {
		switch seen[w] {
		case 0:
			missing = append(missing, w)
		case 1:
		default:
			dups = append(dups, w)
		}
		delete(seen, w)
	}
	var extra []string
	for s := range seen {
		extra = append(extra, s)
	}
	sort.Strings(extra)
	if len(missing)+len(dups)+len(extra) > 0 {
		return fmt.Errorf("%d missing %s, %d duplicated %s, %d unexpected %s (got %d)", len(missing), head(missing), len(dups), head(dups), len(extra), head(extra), len(got))
	}
	return nil
}

func head(s []string) string {
	if len(s) > 5 {
		return fmt.Sprint(s[:5], "...")
	}
	return fmt.Sprint(s)
}

// inOrder checks that the lines with prefix appear in increasing order.
func inOrder(got []string, prefix string) error {
	last := ""
	for _, g := range got {
		if !strings.HasPrefix(g, prefix+"-") {
			continue
		}
		if g <= last {
			return fmt.Errorf("%s after %s", g, last)
		}
		last = g
	}
	return nil
}

func readCheckpoints(t testing.TB, dataDir string) checkpointFile {
	t.Helper()
	s, err := openStore(filepath.Join(dataDir, "input", "tail.test"))
	if err != nil {
		t.Fatal(err)
	}
	var cf checkpointFile
	for _, c := range s.m {
		cf.Files = append(cf.Files, *c)
	}
	return cf
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
