package forward

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/plugins/forwardproto"
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
	return d.countRecords(b)
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
				if !containsRecord(b, id) {
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

func containsRecord(journal, id []byte) bool {
	for len(journal) > 0 {
		n := min(len(journal), 1+int(journal[0]))
		if string(journal[1:n]) == string(id) {
			return true
		}
		journal = journal[n:]
	}
	return false
}

// TestDedupEvictionBeforeRetention: ids forgotten to make room are
// reported with their age, as early when younger than retention; ids
// older than retention are forgotten quietly, and the journal's ids loaded
// at start are not reported while loading.
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
	d.now = func() time.Time { return clock }
	for i := range 4 {
		commit(t, d, fmt.Sprint("old-", i))
	}
	if len(got) != 0 {
		t.Fatalf("evictions %v before the window was full", got)
	}
	clock = clock.Add(2 * time.Minute)
	commit(t, d, "new-0") // forgets old-0, 2m old: not early
	clock = clock.Add(10 * time.Second)
	for i := 1; i < 4; i++ {
		commit(t, d, fmt.Sprint("new-", i)) // forgets old-1..3
	}
	commit(t, d, "new-4") // forgets new-0, 10s old: early
	want := []eviction{{2 * time.Minute, false}, {130 * time.Second, false}, {130 * time.Second, false}, {130 * time.Second, false}, {10 * time.Second, true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("evictions %v, want %v", got, want)
	}
	if known(d, "new-0") || !known(d, "new-4") || !known(d, "new-1") {
		t.Fatal("the window does not hold the 4 newest ids")
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	// A smaller window on restart forgets ids while loading: not reported.
	got = nil
	d, err = openDedup(dir, 2, time.Minute, nil, func(age time.Duration, early bool) { got = append(got, eviction{age, early}) })
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if len(got) != 0 || !known(d, "new-4") || !known(d, "new-3") || known(d, "new-2") {
		t.Fatalf("load: evictions %v, or the wrong ids kept", got)
	}
}

// TestDedupRingGrows: the ring starts small and grows with use up to the
// window, keeping every id in order across growths and wraps.
func TestDedupRingGrows(t *testing.T) {
	const window = 3*ringMin + 7
	d, err := openDedup(t.TempDir(), window, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if len(d.ring) != ringMin {
		t.Fatalf("ring of %d slots before use, want %d", len(d.ring), ringMin)
	}
	const n = window + 500
	for i := range n {
		commit(t, d, fmt.Sprint("id-", i))
	}
	if len(d.ring) != window || d.size != window || len(d.ids) != window {
		t.Fatalf("ring %d, size %d, ids %d; want %d", len(d.ring), d.size, len(d.ids), window)
	}
	for i := range n {
		if want := i >= n-window; known(d, fmt.Sprint("id-", i)) != want {
			t.Fatalf("id-%d: known %v, want %v", i, !want, want)
		}
	}
}

// TestDedupBytesPerID measures the RAM a remembered id costs (a logship
// chunk id, 32 characters), the figure dedup_window's sizing rule uses:
// about 110 bytes (136 before committed ids shared one entry).
func TestDedupBytesPerID(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 200000 ids")
	}
	const n = 200000
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	d, err := openDedup("", n, time.Minute, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	t.Logf("%.0f bytes of RAM per remembered id", per)
	if per > 125 {
		t.Fatalf("%.0f bytes per id: docs (dedup_window) say about 110", per)
	}
	runtime.KeepAlive(d)
}
