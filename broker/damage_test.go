package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/internal/testutil"
)

// damagedLog writes n records of 333 bytes into partition 0 in 4 KiB
// segments (12 records each), commits cursor "out" up to commit (if >= 0),
// closes, and returns the segment files with their record counts.
func damagedLog(t *testing.T, dir string, n, commit int) ([]string, []int64) {
	t.Helper()
	b, err := Open(dir, WithPartitions(1), WithSegmentBytes(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	if commit >= 0 {
		if _, err := b.Cursor("hold", 0); err != nil { // keeps every segment
			t.Fatal(err)
		}
		c, err := b.Cursor("out", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Commit(uint64(commit)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var counts []int64
	for _, s := range r.Partitions[0].Segments {
		paths = append(paths, filepath.Join(dir, partDirName(0), s.Name))
		counts = append(counts, s.Records)
	}
	if len(paths) < 4 {
		t.Fatalf("%d segments, want at least 4", len(paths))
	}
	return paths, counts
}

// replaceByDir replaces a file by a directory of the same name.
func replaceByDir(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "x"), []byte("not a segment"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCursorFileIsDirectory: a cursor file that is a directory does not
// stop Open; the cursor restarts at the oldest retained record (re-delivers
// rather than loses) and is persisted again.
func TestCursorFileIsDirectory(t *testing.T) {
	dir := t.TempDir()
	damagedLog(t, dir, 40, 29)
	cpath := filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix)
	replaceByDir(t, cpath)
	core, logs := observer.New(zap.WarnLevel)
	b, err := Open(dir, WithPartitions(1), WithSegmentBytes(4<<10), WithLogger(zap.New(core)))
	if err != nil {
		t.Fatalf("Open with a cursor file that is a directory: %v", err)
	}
	if n := logs.FilterMessageSnippet("unreadable cursor file").Len(); n != 1 {
		t.Fatalf("%d warnings about the cursor file, want 1", n)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Committed(); got != 0 {
		t.Fatalf("cursor restarts at %d, want 0 (the oldest retained record)", got)
	}
	rs := readN(t, c, 40)
	if err := c.Commit(rs[34].Offset); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close (persisting the cursor again): %v", err)
	}
	b = openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10))
	c, err = b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Committed(); got != 35 {
		t.Fatalf("cursor persisted at %d, want 35", got)
	}
}

// TestLastSegmentIsDirectory: the last segment replaced by a directory
// does not stop Open nor leave appends failing: it is set aside, appends
// continue at its base offset in a new epoch, and what a cursor had
// consumed of it is counted as lost.
func TestLastSegmentIsDirectory(t *testing.T) {
	for _, only := range []bool{false, true} {
		name := "last of several"
		if only {
			name = "the only one"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			n, commit := 40, 38
			if only {
				n, commit = 10, 6
			}
			b, err := Open(dir, WithPartitions(1), WithSegmentBytes(4<<10))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				mustAppend(t, b, "t", payload("t", i, 300), 1)
			}
			c, err := b.Cursor("out", 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Commit(uint64(commit)); err != nil {
				t.Fatal(err)
			}
			e1 := b.Stats().Epoch
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segFiles(t, dir, 0)
			last := segs[len(segs)-1]
			lastBase, _ := parseSegName(filepath.Base(last))
			replaceByDir(t, last)

			b = openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10))
			if err := b.Healthy(); err != nil {
				t.Fatalf("Healthy: %v", err)
			}
			st := b.Stats()
			if want := uint64(commit+1) - lastBase; st.CorruptRecords != want {
				t.Fatalf("%d records counted lost, want %d (consumed from the lost segment)", st.CorruptRecords, want)
			}
			if st.Epoch == e1 {
				t.Fatal("offsets are reused in the same epoch")
			}
			pos := mustAppend(t, b, "t", []byte("after"), 1)
			if pos.Offset != lastBase {
				t.Fatalf("append after the lost segment at %d, want %d", pos.Offset, lastBase)
			}
			if err := b.Healthy(); err != nil {
				t.Fatalf("Healthy after an append: %v", err)
			}
			c, err = b.Cursor("out", 0)
			if err != nil {
				t.Fatal(err)
			}
			if c.Committed() != lastBase {
				t.Fatalf("cursor at %d, want %d", c.Committed(), lastBase)
			}
			if r := readN(t, c, 1)[0]; r.Offset != lastBase || string(r.Entries) != "after" || r.Epoch != st.Epoch {
				t.Fatalf("record %d %q epoch %x", r.Offset, r.Entries, r.Epoch)
			}
			if m, _ := filepath.Glob(last + ".damaged-*"); len(m) != 1 {
				t.Fatalf("damaged path not set aside: %v", m)
			}
		})
	}
}

// TestMissingMiddleSegmentCounted: readers that skip over records missing
// from the middle of the log count exactly them in
// logship_buffer_corrupted_records_total, and log it once.
func TestMissingMiddleSegmentCounted(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		kept   func(records int64) int64 // records of the damaged segment still read
	}{
		{"deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, func(int64) int64 { return 0 }},
		{"a directory", func(t *testing.T, path string) { replaceByDir(t, path) }, func(int64) int64 { return 0 }},
		{"truncated to nothing", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, func(int64) int64 { return 0 }},
		{"truncated after 3 records", func(t *testing.T, path string) {
			if err := os.Truncate(path, segHeaderSize+3*333); err != nil {
				t.Fatal(err)
			}
		}, func(int64) int64 { return 3 }},
		{"truncated inside the 6th record", func(t *testing.T, path string) {
			if err := os.Truncate(path, segHeaderSize+5*333+100); err != nil {
				t.Fatal(err)
			}
		}, func(int64) int64 { return 5 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			const n = 50
			paths, counts := damagedLog(t, dir, n, -1)
			tc.damage(t, paths[1])
			lost := counts[1] - tc.kept(counts[1])
			core, logs := observer.New(zap.WarnLevel)
			b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), WithLogger(zap.New(core)))
			for _, name := range []string{"a", "b"} { // two readers: counted once
				c, err := b.Cursor(name, 0)
				if err != nil {
					t.Fatal(err)
				}
				rs := drain(t, c)
				if int64(len(rs)) != n-lost {
					t.Fatalf("%s read %d records, want %d", name, len(rs), n-lost)
				}
			}
			if got := b.Stats().CorruptRecords; got != uint64(lost) {
				t.Fatalf("corrupted records %d, want %d", got, lost)
			}
			msgs := logs.FilterMessageSnippet("records missing").Len() + logs.FilterMessageSnippet("skipping corrupted").Len()
			if msgs != 1 {
				t.Fatalf("%d warnings about the lost records, want 1", msgs)
			}
		})
	}
}

// TestHealthy: a failing fdatasync or a full filesystem makes Healthy
// report the error until an append succeeds again.
func TestHealthy(t *testing.T) {
	fs := &faultFS{}
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncAlways), withOpenFile(fs.open), withRetryBackoff(time.Millisecond))
	mustAppend(t, b, "t", nil, 0)
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	fs.syncFail.Store(true)
	if _, err := b.Append(context.Background(), "t", nil, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("append: %v", err)
	}
	if err := b.Healthy(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Healthy after a failed fdatasync: %v, want EIO", err)
	}
	fs.syncFail.Store(false)
	mustAppend(t, b, "t", nil, 0)
	if err := b.Healthy(); err != nil {
		t.Fatalf("Healthy after a good append: %v", err)
	}

	fs.full.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := b.Append(context.Background(), "t", []byte("x"), 1)
		done <- err
	}()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if err := b.Healthy(); !errors.Is(err, syscall.ENOSPC) {
			return errors.New("not unhealthy")
		}
		return nil
	})
	fs.full.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(); err != nil {
		t.Fatalf("Healthy once the disk has room: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Healthy(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Healthy after Close: %v", err)
	}
}

// TestDamagedMetaAndDirs: META that is a directory, a partition directory
// that is a file and a cursors directory that is a file do not stop Open:
// each is set aside; META is made anew with a new incarnation.
func TestDamagedMetaAndDirs(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	e1 := b.Stats().Epoch
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	replaceByDir(t, filepath.Join(dir, metaFile))
	if err := os.RemoveAll(filepath.Join(dir, partDirName(1), cursorsDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, partDirName(1), cursorsDir), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, WithPartitions(2))
	if e := b.Stats().Epoch; e>>32 == e1>>32 {
		t.Fatalf("epoch %x after META was lost, want a new incarnation (was %x)", e, e1)
	}
	tag := tagFor(1, 2, "x")
	mustAppend(t, b, tag, []byte("a"), 1)
	c, err := b.Cursor("out", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(readN(t, c, 1)[0].Offset); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// a partition directory that is a file
	p1 := filepath.Join(dir, partDirName(1))
	if err := os.RemoveAll(p1); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p1, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, WithPartitions(2))
	if p := mustAppend(t, b, tag, []byte("b"), 1); p.Partition != 1 || p.Offset != 0 {
		t.Fatalf("append at %+v", p)
	}
}

// TestCheckReportsPathsThatAreNotFiles: buffer check reports a segment and
// a cursor file that are directories, and --repair sets them aside and
// marks the gap lost, so that the log checks clean afterwards.
func TestCheckReportsPathsThatAreNotFiles(t *testing.T) {
	dir := t.TempDir()
	paths, counts := damagedLog(t, dir, 50, 10)
	replaceByDir(t, paths[1])
	replaceByDir(t, filepath.Join(dir, partDirName(0), cursorsDir, "out"+curSuffix))
	r, err := Check(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, p := range r.Problems {
		kinds[p.Kind]++
		if p.Kind == "gap" && p.Records != uint64(counts[1]) {
			t.Fatalf("gap of %d records, want %d", p.Records, counts[1])
		}
	}
	if kinds["not-a-file"] != 1 || kinds["bad-cursor"] != 1 || kinds["gap"] != 1 || r.OK() {
		t.Fatalf("problems %+v", r.Problems)
	}
	if r, err = Check(dir, true); err != nil || !r.OK() {
		t.Fatalf("repair: %v %+v", err, r)
	}
	if r, err = Check(dir, false); err != nil || len(r.Problems) != 0 {
		t.Fatalf("after repair: %v %+v", err, r.Problems)
	}
}

// failOpenFS makes opening the named segment files fail with EIO, once
// each.
type failOpenFS struct {
	mu   sync.Mutex
	fail map[string]bool
}

func (fs *failOpenFS) open(path string, flag int) (segFile, error) {
	fs.mu.Lock()
	fail := fs.fail[path]
	delete(fs.fail, path)
	fs.mu.Unlock()
	if fail {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EIO}
	}
	return openOSFile(path, flag)
}

// TestUnreadableSegments: a last segment that cannot be opened is set
// aside (appends continue at its base, in a new epoch); a sealed one that
// cannot be opened is a gap readers count exactly.
func TestUnreadableSegments(t *testing.T) {
	dir := t.TempDir()
	paths, counts := damagedLog(t, dir, 50, -1)
	last := paths[len(paths)-1]
	lastBase, _ := parseSegName(filepath.Base(last))
	fs := &failOpenFS{fail: map[string]bool{paths[1]: true, last: true}}
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), withOpenFile(fs.open))
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	if p := mustAppend(t, b, "t", []byte("after"), 1); p.Offset != lastBase {
		t.Fatalf("append at %d, want %d (the lost last segment's base)", p.Offset, lastBase)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(50) - counts[1] - counts[len(counts)-1] + 1
	if rs := drain(t, c); int64(len(rs)) != want {
		t.Fatalf("read %d records, want %d", len(rs), want)
	}
	if got := b.Stats().CorruptRecords; got != uint64(counts[1]) {
		t.Fatalf("corrupted records %d, want %d (the unreadable sealed segment)", got, counts[1])
	}
	if m, _ := filepath.Glob(last + ".damaged-*"); len(m) != 1 {
		t.Fatalf("unreadable last segment not set aside: %v", m)
	}
}

// TestTransientOpenErrorFailsOpen: a process-side error (too many open
// files) opening a segment makes Open fail, to be retried; no good
// segment is set aside for it.
func TestTransientOpenErrorFailsOpen(t *testing.T) {
	dir := t.TempDir()
	paths, _ := damagedLog(t, dir, 50, -1)
	for _, path := range []string{paths[1], paths[len(paths)-1]} {
		open := func(p string, flag int) (segFile, error) {
			if p == path {
				return nil, &os.PathError{Op: "open", Path: p, Err: syscall.EMFILE}
			}
			return openOSFile(p, flag)
		}
		if b, err := Open(dir, WithPartitions(1), WithSegmentBytes(4<<10), withOpenFile(open)); !errors.Is(err, syscall.EMFILE) {
			if err == nil {
				b.Close()
			}
			t.Fatalf("Open with EMFILE on %s: %v", filepath.Base(path), err)
		}
		if m, _ := filepath.Glob(filepath.Join(dir, partDirName(0), "*.damaged-*")); len(m) != 0 {
			t.Fatalf("set aside for a transient error: %v", m)
		}
	}
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(drain(t, c)); n != 50 || b.Stats().CorruptRecords != 0 {
		t.Fatalf("read %d records, %d counted lost", n, b.Stats().CorruptRecords)
	}
}
