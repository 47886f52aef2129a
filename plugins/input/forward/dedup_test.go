package forward

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
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
