package broker

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/internal/testutil"
)

// faultFS injects a full filesystem (ENOSPC after a partial write) and
// fdatasync errors into segment files.
type faultFS struct {
	full     atomic.Bool
	syncFail atomic.Bool  // fdatasync returns EIO
	partial  atomic.Int64 // partial writes done
}

func (fs *faultFS) open(path string, flag int) (segFile, error) {
	if fs.full.Load() && flag&os.O_CREATE != 0 {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.ENOSPC}
	}
	f, err := openOSFile(path, flag)
	if err != nil {
		return nil, err
	}
	return &faultFile{segFile: f, fs: fs}, nil
}

type faultFile struct {
	segFile
	fs *faultFS
}

func (f *faultFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	if f.fs.full.Load() {
		// the kernel wrote what fitted: part of the data, then ENOSPC
		var part []byte
		for _, b := range bufs {
			part = append(part, b...)
		}
		n, _ := f.segFile.WriteVAt([][]byte{part[:len(part)*2/3]}, off)
		f.fs.partial.Add(1)
		return n, &os.PathError{Op: "pwritev", Path: "segment", Err: syscall.ENOSPC}
	}
	return f.segFile.WriteVAt(bufs, off)
}

func (f *faultFile) Datasync() error {
	if f.fs.syncFail.Load() {
		return &os.PathError{Op: "fdatasync", Path: "segment", Err: syscall.EIO}
	}
	return f.segFile.Datasync()
}

func TestAppendOnNoSpaceLeft(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	fs := &faultFS{}
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncAlways), WithSegmentBytes(4<<10),
		withOpenFile(fs.open), withRetryBackoff(time.Millisecond), WithLogger(zap.New(core)))
	for i := 0; i < 3; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	fs.full.Store(true)
	const waiting = 20 // enough to need a new segment too
	var wg sync.WaitGroup
	var acked atomic.Int32
	for i := 3; i < 3+waiting; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Append(context.Background(), "t", payload("t", i, 300), 1); err != nil {
				t.Errorf("append %d: %v", i, err)
				return
			}
			acked.Add(1)
		}()
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if fs.partial.Load() < 5 || b.Stats().DiskFullErrors < 5 {
			return errors.New("not retrying yet")
		}
		return nil
	})
	if n := acked.Load(); n != 0 {
		t.Fatalf("%d appends acknowledged while the disk was full", n)
	}
	fs.full.Store(false)
	wg.Wait()
	if n := logs.FilterMessageSnippet("filesystem full").Len(); n != 1 {
		t.Fatalf("%d full-disk warnings, want 1 (rate-limited)", n)
	}
	// every record is there once, intact; no partial write left behind
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, r := range readN(t, c, 3+waiting) {
		if r.Offset != uint64(i) {
			t.Fatalf("offset %d at %d", r.Offset, i)
		}
		seen[string(r.Entries)] = true
	}
	if len(seen) != 3+waiting {
		t.Fatalf("%d distinct records", len(seen))
	}
	if st := b.Stats(); st.CorruptRecords != 0 {
		t.Fatalf("%d corrupt records", st.CorruptRecords)
	}
	for _, seg := range segFiles(t, dir, 0) {
		f, err := os.Open(seg)
		if err != nil {
			t.Fatal(err)
		}
		base, _ := parseSegName(seg[len(seg)-24:])
		res, err := scanSegment(f, fileSize(t, seg), base, nil)
		f.Close()
		if err != nil || len(res.bad) != 0 {
			t.Fatalf("%s: %v, bad spans %+v", seg, err, res.bad)
		}
	}
}

func TestAppendOnNoSpaceLeftCancelled(t *testing.T) {
	fs := &faultFS{}
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), withOpenFile(fs.open), withRetryBackoff(time.Millisecond))
	mustAppend(t, b, "t", payload("t", 0, 300), 1)
	seg := segFiles(t, dir, 0)[0]
	size := fileSize(t, seg)
	fs.full.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Append(ctx, "t", payload("t", 1, 300), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append on a full disk: %v", err)
	}
	// the partial write is cut back once the writer gave up on it
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := fileSize(t, seg); got != size {
			return errors.New("partial write still there")
		}
		if b.Stats().Bytes != size {
			return errors.New("reservation not given back")
		}
		return nil
	})
	fs.full.Store(false)
	if p := mustAppend(t, b, "t", payload("t", 1, 300), 1); p.Offset != 1 {
		t.Fatalf("offset %d after a cancelled append, want 1", p.Offset)
	}
}

func TestSyncFailureIsNotAcknowledged(t *testing.T) {
	fs := &faultFS{}
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncAlways), withOpenFile(fs.open))
	mustAppend(t, b, "t", nil, 0)
	fs.syncFail.Store(true)
	if _, err := b.Append(context.Background(), "t", nil, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("append whose fdatasync failed: %v, want EIO", err)
	}
	errc := make(chan error, 1)
	if err := b.AppendAsync(context.Background(), "t", nil, 0, func(_ Pos, err error) { errc <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, syscall.EIO) {
		t.Fatalf("done of an append whose fdatasync failed: %v", err)
	}
	fs.syncFail.Store(false)
	if p := mustAppend(t, b, "t", nil, 0); p.Offset != 3 {
		t.Fatalf("append after the disk recovered at %d, want 3", p.Offset)
	}
}
