package forward

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// breakCompaction makes every compaction of dir's journal fail: its
// temporary file's name is taken by a directory (not empty: compaction's
// clean-up does not remove it).
func breakCompaction(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "chunk-ids.compact", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestDedupTornRecordCompactionFails: a journal whose last record is torn
// (a kill mid-write), opened while compaction fails, is cut back to whole
// records before it is appended to, so that the ids committed after it are
// read back at the next start.
func TestDedupTornRecordCompactionFails(t *testing.T) {
	dir := t.TempDir()
	d, err := openDedup(dir, 100, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, d, "a")
	commit(t, d, "b")
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "chunk-ids"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("torn record")); err != nil { // 11 of 24 bytes
		t.Fatal(err)
	}
	f.Close()
	breakCompaction(t, dir)
	reported := 0
	for round, ids := range [][]string{{"c", "d"}, {"e"}} {
		d, err = openDedup(dir, 100, time.Hour, func(error) { reported++ }, nil)
		if err != nil {
			t.Fatal(err)
		}
		if reported != round+1 {
			t.Fatalf("round %d: %d compaction failures reported, want %d", round, reported, round+1)
		}
		for _, id := range ids {
			commit(t, d, id)
		}
		if err := d.close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "chunk-ids"))
	if err != nil {
		t.Fatal(err)
	}
	if (len(b)-journalHeader)%recordSize != 0 || (len(b)-journalHeader)/recordSize != 5 {
		t.Fatalf("journal of %d bytes, want the header and 5 whole records", len(b))
	}
	if err := os.RemoveAll(filepath.Join(dir, "chunk-ids.compact")); err != nil {
		t.Fatal(err)
	}
	d, err = openDedup(dir, 100, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if !known(d, id) {
			t.Fatalf("%s forgotten", id)
		}
	}
	if d.ids.len() != 5 {
		t.Fatalf("%d ids loaded, want 5 (garbage read from the torn record?)", d.ids.len())
	}
}

// TestDedupZeroHeader: a journal a power loss left zero-filled (its header
// never reached the disk) reads as empty: the input starts with an empty
// window, also when compaction fails and the journal is appended to (its
// header is rewritten).
func TestDedupZeroHeader(t *testing.T) {
	for _, broken := range []bool{false, true} {
		t.Run(fmt.Sprint("compaction_fails=", broken), func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "chunk-ids"), make([]byte, 40), 0o644); err != nil {
				t.Fatal(err)
			}
			if broken {
				breakCompaction(t, dir)
			}
			d, err := openDedup(dir, 100, time.Hour, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.ids.len() != 0 {
				t.Fatalf("%d ids loaded from a zero-filled journal", d.ids.len())
			}
			commit(t, d, "a")
			if err := d.close(); err != nil {
				t.Fatal(err)
			}
			if n := journalRecords(t, d); n != 1 {
				t.Fatalf("journal of %d records, want 1", n)
			}
			d, err = openDedup(dir, 100, time.Hour, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.close()
			if !known(d, "a") || d.ids.len() != 1 {
				t.Fatalf("after a restart: %d ids, a known: %v", d.ids.len(), known(d, "a"))
			}
		})
	}
}

// TestDedupSmallerWindowReported: an agent restarted with a dedup_window
// smaller than the live ids of its journal reports every id it forgets
// while younger than retention (onEvict, early), once; the expired ids of
// the journal are skipped, not reported.
func TestDedupSmallerWindowReported(t *testing.T) {
	dir := t.TempDir()
	clock := time.Unix(1_700_000_000, 0)
	dedupClock = func() time.Time { return clock }
	defer func() { dedupClock = time.Now }()
	d, err := openDedup(dir, 100, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	setClock(d, &clock)
	for i := range 5 {
		commit(t, d, fmt.Sprint("expired-", i))
	}
	advance(d, &clock, 2*time.Hour)
	for i := range 50 {
		commit(t, d, fmt.Sprint("live-", i))
		advance(d, &clock, time.Second)
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	d, err = openDedup(dir, 20, time.Hour, nil, func(age time.Duration, early bool) {
		if !early {
			t.Errorf("eviction at load of an id %v old not early", age)
		}
		got = append(got, age)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 30 || got[0] != 50*time.Second || got[29] != 21*time.Second {
		t.Fatalf("%d evictions reported at load (%v), want 30, 50s to 21s old", len(got), got)
	}
	if known(d, "live-29") || !known(d, "live-30") || !known(d, "live-49") {
		t.Fatal("the window does not hold the 20 newest ids")
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	got = nil
	d, err = openDedup(dir, 20, time.Hour, nil, func(age time.Duration, _ bool) { got = append(got, age) })
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if len(got) != 0 {
		t.Fatalf("evictions %v reported again at the next start (the journal was compacted)", got)
	}
}
