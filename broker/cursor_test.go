package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

func TestCursorSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithPartitions(1), WithSync(SyncAlways), WithSegmentBytes(4 << 10)}
	b, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := readN(t, c, 20) // read ahead of the commit point
	if err := c.Commit(recs[11].Offset); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, opts...)
	c, err = b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Committed() != 12 {
		t.Fatalf("committed after restart %d, want 12", c.Committed())
	}
	if r := readN(t, c, 1)[0]; r.Offset != 12 {
		t.Fatalf("first record after restart %d, want 12", r.Offset)
	}
	// a cursor flushed by the background flusher survives a crash too
	if err := c.Commit(20); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := decodeCursor(data); err != nil || v != 21 {
		t.Fatalf("cursor file says %d (%v), want 21", v, err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, partDirName(0), cursorsDir, "*"+tmpSuffix)); len(m) != 0 {
		t.Fatalf("temp files left: %v", m)
	}
}

func TestBackgroundFlushPersistsCommits(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), withFlushEvery(10*time.Millisecond))
	mustAppend(t, b, "t", nil, 0)
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(0); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		data, err := os.ReadFile(filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix))
		if err != nil {
			return err
		}
		if v, _, err := decodeCursor(data); err != nil || v != 1 {
			return errors.New("not flushed yet")
		}
		return nil
	})
}

func TestCommitMovesForwardOnly(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncNone))
	for i := 0; i < 10; i++ {
		mustAppend(t, b, "t", nil, 0)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(6); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(3); err != nil {
		t.Fatal(err)
	}
	if c.Committed() != 7 {
		t.Fatalf("committed %d, want 7", c.Committed())
	}
	if err := c.Commit(10); err == nil {
		t.Fatal("commit beyond the end accepted")
	}
	// reading resumes after the commit point when it was behind
	if r := readN(t, c, 1)[0]; r.Offset != 7 {
		t.Fatalf("next %d, want 7", r.Offset)
	}
}

func TestCursorReset(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(2<<10))
	for i := 0; i < 40; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	readN(t, c, 5)
	if err := c.Commit(4); err != nil {
		t.Fatal(err)
	}
	readN(t, c, 30) // read far ahead, across segments
	c.Reset()
	for i, r := range readN(t, c, 35) {
		if r.Offset != uint64(5+i) {
			t.Fatalf("after Reset record %d has offset %d", i, r.Offset)
		}
	}
}

func TestCursorInUse(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(2))
	c, err := b.Cursor("out", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Cursor("out", 1); !errors.Is(err, ErrCursorInUse) {
		t.Fatalf("second Cursor: %v", err)
	}
	if _, err := b.Cursor("out", 0); err != nil {
		t.Fatalf("same name on another partition: %v", err)
	}
	if _, err := b.Cursor("out", 2); err == nil {
		t.Fatal("partition out of range accepted")
	}
	if err := b.RemoveCursor("out"); !errors.Is(err, ErrCursorInUse) {
		t.Fatalf("RemoveCursor of an open cursor: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next on a closed cursor: %v", err)
	}
	if _, err := b.Cursor("out", 1); err != nil {
		t.Fatalf("reopen after Close: %v", err)
	}
}

func TestCursorCloseWakesNext(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(1))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Next(context.Background())
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Next after Close: %v", err)
	}
}

func TestCursorClampedPastEnd(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 5)
	if err := writeCursorFile(filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix), 1000); err != nil {
		t.Fatal(err)
	}
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Committed() != 5 {
		t.Fatalf("committed %d, want clamped to 5", c.Committed())
	}
	mustAppend(t, b, "t", payload("t", 5, 300), 1)
	if r := readN(t, c, 1)[0]; r.Offset != 5 {
		t.Fatalf("next %d, want 5: the new record must not be skipped", r.Offset)
	}
}

func TestCursorClampedIntoDeletedSegment(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 40, WithSegmentBytes(2<<10))
	segs := segFiles(t, dir, 0)
	if err := os.Remove(segs[0]); err != nil {
		t.Fatal(err)
	}
	first, _ := parseSegName(filepath.Base(segs[1]))
	if err := writeCursorFile(filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix), 1); err != nil {
		t.Fatal(err)
	}
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(2<<10))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Committed() != first {
		t.Fatalf("committed %d, want clamped to %d", c.Committed(), first)
	}
	if r := readN(t, c, 1)[0]; r.Offset != first {
		t.Fatalf("next %d, want %d", r.Offset, first)
	}
}

func TestCorruptCursorFileIgnored(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 5)
	if err := os.WriteFile(filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Committed() != 0 {
		t.Fatalf("committed %d, want 0 (re-deliver rather than lose)", c.Committed())
	}
}

func TestRemoveCursor(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(2))
	for p := 0; p < 2; p++ {
		c, err := b.Cursor("gone", p)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if err := b.RemoveCursor("gone"); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "p*", cursorsDir, "gone*")); len(m) != 0 {
		t.Fatalf("files left: %v", m)
	}
	if len(b.Stats().Cursors) != 0 {
		t.Fatalf("stats still list %v", b.Stats().Cursors)
	}
}
