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

	"github.com/logship/logship/internal/testutil"
)

// TestReadersSeeOnlySyncedRecords checks that under SyncAlways and
// SyncInterval a cursor does not return a record before the fdatasync
// covering it completed, and that under SyncNone it returns it once
// written.
func TestReadersSeeOnlySyncedRecords(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			fs := &gateFS{}
			b := openT(t, t.TempDir(), WithPartitions(1), WithSync(mode), WithSyncInterval(time.Millisecond),
				WithSegmentBytes(4<<10), withOpenFile(fs.open))
			t.Cleanup(fs.release) // before the broker's Close
			c, err := b.Cursor("out", 0)
			if err != nil {
				t.Fatal(err)
			}
			mustAppend(t, b, "t", payload("t", 0, 100), 1)
			if r := readN(t, c, 1)[0]; r.Offset != 0 {
				t.Fatalf("first record at %d", r.Offset)
			}
			fs.hold()
			acked := make(chan error, 64)
			// enough to roll a segment or two meanwhile
			const n = 40
			for i := 1; i <= n; i++ {
				if err := b.AppendAsync(context.Background(), "t", payload("t", i, 300), 1, func(_ Pos, err error) { acked <- err }); err != nil {
					t.Fatal(err)
				}
			}
			testutil.CheckFor(t, 5*time.Second, func() error {
				if b.Stats().Partitions[0].NextOffset != n+1 {
					return errors.New("not written yet")
				}
				return nil
			})
			if mode == SyncNone {
				if rs := readN(t, c, n); rs[n-1].Offset != n {
					t.Fatalf("last record at %d", rs[n-1].Offset)
				}
				return
			}
			testutil.CheckFor(t, 5*time.Second, func() error {
				if fs.started.Load() == fs.done.Load() {
					return errors.New("no fdatasync running")
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			r, err := c.Next(ctx)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Next while the fdatasync is held: record %d, %v; want nothing", r.Offset, err)
			}
			if err := c.Commit(1); err == nil {
				t.Fatal("Commit of an unsynced record accepted")
			}
			fs.release()
			rs := readN(t, c, n)
			for i, r := range rs {
				if r.Offset != uint64(i+1) || string(r.Entries) != string(payload("t", i+1, 300)) {
					t.Fatalf("record %d: offset %d", i+1, r.Offset)
				}
			}
			for i := 0; i < n; i++ {
				if err := <-acked; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// failOnceFS fails the next fdatasync of one file once.
type failOnceFS struct {
	mu    sync.Mutex
	path  string // fail the next fdatasync of this file
	syncs map[string]int
}

func (fs *failOnceFS) open(path string, flag int) (segFile, error) {
	f, err := openOSFile(path, flag)
	if err != nil {
		return nil, err
	}
	return &failOnceFile{segFile: f, fs: fs, path: path}, nil
}

type failOnceFile struct {
	segFile
	fs   *failOnceFS
	path string
}

func (f *failOnceFile) Datasync() error {
	f.fs.mu.Lock()
	fail := f.fs.path == f.path
	if fail {
		f.fs.path = ""
	} else {
		f.fs.syncs[f.path]++
	}
	f.fs.mu.Unlock()
	if fail {
		return &os.PathError{Op: "fdatasync", Path: f.path, Err: syscall.EIO}
	}
	return f.segFile.Datasync()
}

// TestSealedSyncFailureRetried: when the fdatasync of a sealed segment
// fails, the appends it covered get the error, and the next sync
// fdatasyncs that segment again before anything after it is acknowledged
// or read.
func TestSealedSyncFailureRetried(t *testing.T) {
	fs := &failOnceFS{syncs: map[string]int{}}
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncAlways), WithSegmentBytes(4<<10), withOpenFile(fs.open))
	first := filepath.Join(dir, partDirName(0), segName(0))
	for i := 0; i < 12; i++ { // fills segment 0
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	before := fs.syncs[first]
	fs.mu.Lock()
	fs.path = first
	fs.mu.Unlock()
	// rolls: the sync of this append fdatasyncs the sealed segment 0 first
	if _, err := b.Append(context.Background(), "t", payload("t", 12, 300), 1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("append whose sync failed on the sealed segment: %v", err)
	}
	if b.Healthy() == nil {
		t.Fatal("healthy after a failed fdatasync")
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(drainTo(t, c, 13)); n != 12 {
		t.Fatalf("read %d records before the failed sync was retried, want 12", n)
	}
	mustAppend(t, b, "t", payload("t", 13, 300), 1)
	fs.mu.Lock()
	again := fs.syncs[first] - before
	fs.mu.Unlock()
	if again != 1 {
		t.Fatalf("sealed segment fdatasync'd %d times after its failure, want 1", again)
	}
	if err := b.Healthy(); err != nil {
		t.Fatal(err)
	}
	if rs := readN(t, c, 2); rs[0].Offset != 12 || rs[1].Offset != 13 {
		t.Fatalf("offsets %d %d", rs[0].Offset, rs[1].Offset)
	}
}

// drainTo reads until the cursor has nothing more within a short wait.
func drainTo(t *testing.T, c *Cursor, max int) []Record {
	t.Helper()
	var out []Record
	for len(out) < max {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		r, err := c.Next(ctx)
		cancel()
		if err != nil {
			break
		}
		out = append(out, r)
	}
	return out
}
