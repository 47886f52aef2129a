package forward

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	"github.com/logship/logship/plugins/output/stdout"
)

func commit(t *testing.T, d *dedup, id string) {
	t.Helper()
	if !d.begin([]byte(id), func(error) {}) {
		t.Fatalf("%s: already known", id)
	}
	d.finish([]byte(id), nil)
}

func known(d *dedup, id string) bool {
	answered := false
	if d.begin([]byte(id), func(error) { answered = true }) {
		d.finish([]byte(id), errors.New("probe only")) // forget the probe
		return false
	}
	return answered
}

func journalRecords(t *testing.T, d *dedup) int {
	t.Helper()
	b, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < journalHeader || string(b[:len(journalMagic)]) != journalMagic {
		t.Fatalf("journal of %d bytes without its header", len(b))
	}
	return (len(b) - journalHeader) / recordSize
}

// TestDedupCompactionFailureRetried: a failed compaction is reported and
// retried later; dedup and its journal go on meanwhile, and once the disk
// recovers the journal is compacted and holds the window across a restart.
func TestDedupCompactionFailureRetried(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var reported []error
	d, err := openDedup(dir, 4, time.Minute, func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }, nil)
	if err != nil {
		t.Fatal(err)
	}
	broken := true
	var bmu sync.Mutex
	create := d.create
	d.create = func(name string) (*os.File, error) {
		bmu.Lock()
		defer bmu.Unlock()
		if broken {
			return nil, errors.New("disk on fire")
		}
		return create(name)
	}
	d.mu.Lock()
	d.retryIn = 20 * time.Millisecond
	d.mu.Unlock()
	for i := range 30 {
		commit(t, d, fmt.Sprint("id-", i))
		time.Sleep(time.Millisecond)
	}
	d.bg.Wait()
	mu.Lock()
	n := len(reported)
	mu.Unlock()
	if n == 0 {
		t.Fatal("the failed compaction was not reported")
	}
	if !known(d, "id-29") || !known(d, "id-26") || known(d, "id-25") {
		t.Fatal("dedup stopped remembering after a failed compaction")
	}
	if got := journalRecords(t, d); got != 30 {
		t.Fatalf("journal holds %d records, want all 30 (none compacted)", got)
	}
	bmu.Lock()
	broken = false
	bmu.Unlock()
	// Retried once the delay (doubled at every failure) has passed.
	i := 30
	testutil.CheckFor(t, 5*time.Second, func() error {
		commit(t, d, fmt.Sprint("id-", i))
		i++
		d.bg.Wait()
		if got := journalRecords(t, d); got > 2*4+1 {
			return fmt.Errorf("journal of %d records after recovery: not compacted again", got)
		}
		return nil
	})
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	d, err = openDedup(dir, 4, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	for j := i - 4; j < i; j++ {
		if !known(d, fmt.Sprint("id-", j)) {
			t.Fatalf("id-%d forgotten across the restart", j)
		}
	}
}

// TestDedupCompactionOutsideLock: while a compaction waits on its fsync,
// chunks are begun and finished (no connection waits for the disk), and the
// ids committed meanwhile are in the compacted journal.
func TestDedupCompactionOutsideLock(t *testing.T) {
	dir := t.TempDir()
	d, err := openDedup(dir, 4, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	syncing := make(chan struct{}, 1)
	d.sync = func(f *os.File) error {
		select {
		case syncing <- struct{}{}:
		default:
		}
		<-release
		return f.Sync()
	}
	for i := range 9 { // the ninth passes 2 * window: compaction starts
		commit(t, d, fmt.Sprint("a-", i))
	}
	select {
	case <-syncing:
	case <-time.After(2 * time.Second):
		t.Fatal("no compaction started")
	}
	done := make(chan struct{})
	go func() {
		for i := range 3 {
			commit(t, d, fmt.Sprint("b-", i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("begin/finish waited for the compaction's fsync")
	}
	close(release)
	d.bg.Wait()
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	d, err = openDedup(dir, 4, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	for _, id := range []string{"b-0", "b-1", "b-2", "a-8"} {
		if !known(d, id) {
			t.Fatalf("%s lost by the compaction", id)
		}
	}
}

// TestDedupGroupedFinishesJournaled: finishes that run together share
// journal writes, yet each id is in the journal when its finish returns
// (before its ack; checked with a window that forgets none), a resend begun
// meanwhile is answered, and nothing deadlocks when a batch holds more ids
// than the window.
func TestDedupGroupedFinishesJournaled(t *testing.T) {
	t.Run("window 1000", func(t *testing.T) { testDedupGrouped(t, 1000) })
	t.Run("window 2", func(t *testing.T) { testDedupGrouped(t, 2) })
}

func testDedupGrouped(t *testing.T, window int) {
	dir := t.TempDir()
	d, err := openDedup(dir, window, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var answered, resent sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				id := []byte(fmt.Sprintf("g%d-%d", g, i))
				if !d.begin(id, func(error) {}) {
					errs <- fmt.Errorf("%s: fresh id taken for a resend", id)
					return
				}
				resent.Add(1)
				answered.Add(1)
				go func() { // a resend racing the finish
					defer resent.Done()
					if d.begin(id, func(error) { answered.Done() }) {
						answered.Done() // forgotten already: a new first copy
						d.finish(id, errors.New("probe only"))
					}
				}()
				d.finish(id, nil)
				if window < 320 {
					continue // forgotten ids leave the journal at compaction
				}
				b, err := os.ReadFile(d.path)
				if err != nil {
					errs <- err
					return
				}
				if !containsRecord(d, b, id) {
					errs <- fmt.Errorf("%s: finish returned before the id was journaled", id)
					return
				}
			}
		}()
	}
	wg.Wait()
	resent.Wait()
	done := make(chan struct{})
	go func() { answered.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a resend was never answered")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
}

// containsRecord reports whether the journal holds id's record.
func containsRecord(d *dedup, journal, id []byte) bool {
	h := d.key.hash(id)
	for b := journal[min(len(journal), journalHeader):]; len(b) >= recordSize; b = b[recordSize:] {
		if got, _ := readRecord(b); got == h {
			return true
		}
	}
	return false
}

// setClock makes d's clock read *clock (the sweeper reads it under mu).
func setClock(d *dedup, clock *time.Time) {
	d.mu.Lock()
	d.now = func() time.Time { return *clock }
	d.mu.Unlock()
}

// advance moves the clock set with setClock.
func advance(d *dedup, clock *time.Time, by time.Duration) {
	d.mu.Lock()
	*clock = clock.Add(by)
	d.mu.Unlock()
}

// TestDedupEvictionBeforeRetention: ids forgotten to make room are
// reported with their age, as early when younger than retention; ids
// older than retention are forgotten by age (reported, not early), and the
// journal's ids a smaller window forgets at start are reported as early.
func TestDedupEvictionBeforeRetention(t *testing.T) {
	dir := t.TempDir()
	type eviction struct {
		age   time.Duration
		early bool
	}
	var got []eviction
	clock := time.Unix(1_700_000_000, 0)
	d, err := openDedup(dir, 4, time.Minute, nil, func(age time.Duration, early bool) { got = append(got, eviction{age, early}) })
	if err != nil {
		t.Fatal(err)
	}
	setClock(d, &clock)
	for i := range 4 {
		commit(t, d, fmt.Sprint("old-", i))
	}
	if len(got) != 0 {
		t.Fatalf("evictions %v before the window was full", got)
	}
	advance(d, &clock, 2*time.Minute)
	commit(t, d, "new-0") // forgets old-0 and old-1, 2m old: expired
	advance(d, &clock, 10*time.Second)
	for i := 1; i < 4; i++ {
		commit(t, d, fmt.Sprint("new-", i)) // forgets old-2 and old-3 (expired)
	}
	commit(t, d, "new-4") // the window is full: forgets new-0, 10s old: early
	want := []eviction{{2 * time.Minute, false}, {2 * time.Minute, false}, {130 * time.Second, false}, {130 * time.Second, false}, {10 * time.Second, true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("evictions %v, want %v", got, want)
	}
	if known(d, "new-0") || !known(d, "new-4") || !known(d, "new-1") {
		t.Fatal("the window does not hold the 4 newest ids")
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	// A smaller window on restart forgets ids while loading: those younger
	// than retention are reported as early (new-1 and new-2, 0s old; the
	// compaction at new-4 dropped the others from the journal).
	got = nil
	dedupClock = func() time.Time { return clock }
	d, err = openDedup(dir, 2, time.Minute, nil, func(age time.Duration, early bool) { got = append(got, eviction{age, early}) })
	dedupClock = time.Now
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	want = []eviction{{0, true}, {0, true}}
	if fmt.Sprint(got) != fmt.Sprint(want) || !known(d, "new-4") || !known(d, "new-3") || known(d, "new-2") {
		t.Fatalf("load: evictions %v, or the wrong ids kept", got)
	}
}

// TestDedupExpiresByAge: an id is remembered for retention after it was
// committed, then forgotten, whether chunks keep coming (each commit
// forgets expired ids first) or not (the sweeper), and its memory is given
// back: what the window holds follows rate x retention, not the window.
func TestDedupExpiresByAge(t *testing.T) {
	const window = 1000000
	d, err := openDedup("", window, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	clock := time.Unix(1_700_000_000, 0)
	setClock(d, &clock)
	empty := d.ids.bytes()
	for i := range 20000 {
		commit(t, d, fmt.Sprint("a-", i))
	}
	full := d.ids.bytes()
	advance(d, &clock, 59*time.Second)
	for i := range 10 {
		commit(t, d, fmt.Sprint("b-", i))
	}
	if !known(d, "a-0") || !known(d, "a-19999") {
		t.Fatal("an id younger than retention was forgotten")
	}
	// Under load: the 60000 commits made after a-* expired forgot them.
	advance(d, &clock, 2*time.Second)
	for i := range 20000 {
		commit(t, d, fmt.Sprint("c-", i))
	}
	if known(d, "a-0") || known(d, "a-19999") || !known(d, "b-9") || !known(d, "c-0") {
		t.Fatal("by age: a-* must be forgotten, b-* and c-* kept")
	}
	if n := d.ids.len(); n != 20010 {
		t.Fatalf("%d ids remembered, want 20010", n)
	}
	// Idle: the sweeper forgets the rest and the memory goes back.
	advance(d, &clock, 2*time.Minute)
	testutil.CheckFor(t, 5*time.Second, func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if n := d.ids.len(); n != 0 {
			return fmt.Errorf("%d ids left after retention with no load", n)
		}
		return nil
	})
	d.mu.Lock()
	idle := d.ids.bytes()
	d.mu.Unlock()
	t.Logf("store: %d bytes empty, %d with 20000 ids, %d once they expired", empty, full, idle)
	if idle > empty+2*blockIDs*20+4096 { // the block at the head, one spare
		t.Fatalf("%d bytes held once every id expired (%d empty)", idle, empty)
	}
	if known(d, "c-0") {
		t.Fatal("c-0 outlived retention")
	}
}

// TestDedupJournalKeepsCommitTimes: the journal keeps when each id was
// committed, so a restart forgets the ids already older than retention
// (and compacts them away) instead of remembering them for retention more.
func TestDedupJournalKeepsCommitTimes(t *testing.T) {
	dir := t.TempDir()
	clock := time.Unix(1_700_000_000, 0)
	reopen := func() *dedup {
		t.Helper()
		dedupClock = func() time.Time { return clock }
		defer func() { dedupClock = time.Now }()
		d, err := openDedup(dir, 1000, time.Minute, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		setClock(d, &clock)
		return d
	}
	d := reopen()
	commit(t, d, "early")
	advance(d, &clock, 40*time.Second)
	commit(t, d, "late")
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(30 * time.Second) // early is 70s old, late 30s
	d = reopen()
	if known(d, "early") || !known(d, "late") {
		t.Fatal("restart: early (70s old) must be forgotten, late (30s) kept")
	}
	if n := journalRecords(t, d); n != 1 {
		t.Fatalf("the compacted journal holds %d records, want the 1 live", n)
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(31 * time.Second)
	d = reopen()
	defer d.close()
	if known(d, "late") {
		t.Fatal("restart: late (61s old) must be forgotten")
	}
}

// TestDedupLegacyJournal: a journal of ids (the format before hashes) is
// read at start and rewritten in the current format; its ids stay known
// across this restart and the next.
func TestDedupLegacyJournal(t *testing.T) {
	dir := t.TempDir()
	var legacy []byte
	for _, id := range []string{"AAECAwQFBgAAAAcAAwAAAAAAAAAq", "b", "ccc"} {
		legacy = append(append(legacy, byte(len(id))), id...)
	}
	legacy = append(legacy, 9, 'x') // torn by a crash: ignored
	if err := os.WriteFile(filepath.Join(dir, "chunk-ids"), legacy, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		d, err := openDedup(dir, 100, time.Minute, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := journalRecords(t, d); n != 3 {
			t.Fatalf("rewritten journal of %d records, want 3", n)
		}
		for _, id := range []string{"AAECAwQFBgAAAAcAAwAAAAAAAAAq", "b", "ccc"} {
			if !known(d, id) {
				t.Fatalf("%s forgotten", id)
			}
		}
		if known(d, "x") {
			t.Fatal("the torn record was read")
		}
		if err := d.close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDedupCompactionKeepsWrittenIDs: an id the buffer stored and the
// journal holds (staged and flushed) but whose finish has not run yet is
// not committed; a compaction then must still write it, or a kill right
// after would forget a stored chunk's id.
func TestDedupCompactionKeepsWrittenIDs(t *testing.T) {
	dir := t.TempDir()
	d, err := openDedup(dir, 100, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	commit(t, d, "done")
	id := []byte("stored")
	if !d.begin(id, func(error) {}) {
		t.Fatal("fresh id taken for a resend")
	}
	d.stage(id)
	d.markFloor(func() []uint64 { return nil }) // writes the staged id
	d.mu.Lock()
	c := d.startCompactionLocked()
	d.mu.Unlock()
	if err := d.compact(c); err != nil {
		t.Fatal(err)
	}
	// What a kill here leaves.
	b, err := os.ReadFile(d.path)
	if err != nil {
		t.Fatal(err)
	}
	if !containsRecord(d, b, id) || !containsRecord(d, b, []byte("done")) {
		t.Fatal("the compacted journal lost an id it held")
	}
	killed := t.TempDir()
	if err := os.WriteFile(filepath.Join(killed, "chunk-ids"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	d2, err := openDedup(killed, 100, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.close()
	if !known(d2, "stored") {
		t.Fatal("after the kill, the stored chunk's id is forgotten")
	}
	d.finish(id, nil)
	if !known(d, "stored") {
		t.Fatal("finished id not known")
	}
}

// TestDedupWindowGrows: the ring and its index start small and grow with
// use up to the window, keeping every id in order across blocks and wraps.
func TestDedupWindowGrows(t *testing.T) {
	const window = 3*blockIDs + 7
	d, err := openDedup(t.TempDir(), window, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if n := d.ids.bytes(); n > 64*shardMin*4+64*32+64 {
		t.Fatalf("%d bytes before use", n)
	}
	const n = window + 500
	for i := range n {
		commit(t, d, fmt.Sprint("id-", i))
	}
	if d.ids.len() != window || len(d.ids.blocks) != 4 {
		t.Fatalf("%d ids in %d blocks; want %d in 4", d.ids.len(), len(d.ids.blocks), window)
	}
	for i := range n {
		if want := i >= n-window; known(d, fmt.Sprint("id-", i)) != want {
			t.Fatalf("id-%d: known %v, want %v", i, !want, want)
		}
	}
}

// TestDedupBytesPerID measures the RAM a remembered id costs (a logship
// chunk id, 32 characters), the figure dedup_window's sizing rule uses:
// about 28 to 32 bytes (a 128-bit hash and a commit time in the ring, an
// index slot at most half full); 110 when the window kept the id strings
// in a map.
func TestDedupBytesPerID(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 200000 ids")
	}
	const n = 200000
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	d, err := openDedup("", n, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	for i := range n + n/2 {
		id := []byte(forwardproto.EpochChunkID([6]byte{1, 2, 3, 4, 5, 6}, 7, uint16(i%4), uint64(i)))
		if !d.begin(id, func(error) {}) {
			t.Fatal("fresh id taken for a resend")
		}
		d.finish(id, nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	per := float64(m1.HeapAlloc-m0.HeapAlloc) / n
	t.Logf("%.1f bytes of RAM per remembered id", per)
	if per > 32 {
		t.Fatalf("%.1f bytes per id: docs (dedup_window) say at most 32", per)
	}
	runtime.KeepAlive(d)
}

// TestDedupWindowRoleDefaults: an agent's forward input remembers 100000
// ids by default, an aggregator's 1000000; a window set in the file wins
// on both, and the agent's default input gets the agent's window.
func TestDedupWindowRoleDefaults(t *testing.T) {
	reg, err := pipeline.NewRegistry(Factory(), stdout.Factory())
	if err != nil {
		t.Fatal(err)
	}
	none := func(string) (string, bool) { return "", false }
	for _, c := range []struct {
		role conf.Role
		text string
		want int
	}{
		{agent.Role, "inputs:\n  - type: forward\n", agentDedupWindow},
		{agent.Role, "service:\n  data_dir: /tmp/x\n", agentDedupWindow}, // the default input
		{agent.Role, "inputs:\n  - type: forward\n    dedup_window: 1000000\n", 1000000},
		{aggregator.Role, "inputs:\n  - type: forward\n", 1000000},
		{aggregator.Role, "inputs:\n  - type: forward\n    dedup_window: 5000\n", 5000},
	} {
		cfg, err := conf.Parse("f.yaml", []byte(c.text+"outputs:\n  - type: stdout\n"), c.role, reg, none)
		if err != nil {
			t.Fatalf("%s %q: %v", c.role.Name, c.text, err)
		}
		if len(cfg.Inputs) != 1 {
			t.Fatalf("%s %q: %d inputs", c.role.Name, c.text, len(cfg.Inputs))
		}
		if got := cfg.Inputs[0].Config.(*Config).DedupWindow; got != c.want {
			t.Errorf("%s %q: dedup_window %d, want %d", c.role.Name, c.text, got, c.want)
		}
	}
}
