package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// gateFS counts fdatasyncs of segment files and can hold them: while held,
// an fdatasync blocks (after counting itself as started) until released.
type gateFS struct {
	started atomic.Int64
	done    atomic.Int64
	mu      sync.Mutex
	gate    chan struct{} // nil: not held
}

func (fs *gateFS) open(path string, flag int) (segFile, error) {
	f, err := openOSFile(path, flag)
	if err != nil {
		return nil, err
	}
	return &gateFile{segFile: f, fs: fs}, nil
}

// hold makes fdatasyncs that start from now on block until release.
func (fs *gateFS) hold() {
	fs.mu.Lock()
	fs.gate = make(chan struct{})
	fs.mu.Unlock()
}

func (fs *gateFS) release() {
	fs.mu.Lock()
	if fs.gate != nil {
		close(fs.gate)
		fs.gate = nil
	}
	fs.mu.Unlock()
}

type gateFile struct {
	segFile
	fs *gateFS
}

func (f *gateFile) Datasync() error {
	f.fs.started.Add(1)
	f.fs.mu.Lock()
	g := f.fs.gate
	f.fs.mu.Unlock()
	if g != nil {
		<-g
	}
	err := f.segFile.Datasync()
	f.fs.done.Add(1)
	return err
}

// TestDefaultSyncIsGroupCommit checks that the default mode is SyncAlways
// and that it never waits for a timer: with sync_interval 1h a lone
// synchronous Append returns, after exactly one fdatasync of its own.
func TestDefaultSyncIsGroupCommit(t *testing.T) {
	if o := defaultOptions(); o.sync != SyncAlways {
		t.Fatalf("default sync mode %s, want always", o.sync)
	}
	fs := &gateFS{}
	b := openT(t, t.TempDir(), WithPartitions(1), WithSyncInterval(time.Hour), withOpenFile(fs.open))
	for i := 0; i < 5; i++ {
		before := fs.done.Load()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := b.Append(ctx, "t", payload("t", i, 100), 1)
		cancel()
		if err != nil {
			t.Fatalf("lone Append %d under the default sync mode with sync_interval 1h: %v", i, err)
		}
		if n := fs.done.Load() - before; n != 1 {
			t.Fatalf("append %d: %d fdatasyncs, want 1", i, n)
		}
	}
}

// TestGroupCommitSharesNextSync checks group commit under SyncAlways:
// appends that arrive while an fdatasync runs are all acknowledged by the
// one fdatasync that starts when it ends.
func TestGroupCommitSharesNextSync(t *testing.T) {
	fs := &gateFS{}
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncAlways), WithSyncInterval(time.Hour), withOpenFile(fs.open))
	t.Cleanup(fs.release) // runs before the broker's Close
	mustAppend(t, b, "t", nil, 0)
	base := fs.started.Load() // Open's recovery and the first append
	fs.hold()
	first := make(chan error, 1)
	go func() {
		_, err := b.Append(context.Background(), "t", payload("t", 1, 100), 1)
		first <- err
	}()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if fs.started.Load() != base+1 {
			return errors.New("held fdatasync not started")
		}
		return nil
	})
	const n = 20
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := b.Append(context.Background(), "t", payload("t", 2+i, 100), 1)
			errs <- err
		}()
	}
	// every one of them is written while the fdatasync is held
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := b.Stats().Partitions[0].NextOffset; got != 2+n {
			return fmt.Errorf("%d records written", got)
		}
		return nil
	})
	if s := fs.started.Load(); s != base+1 {
		t.Fatalf("%d fdatasyncs started while one was running, want none", s-base-1)
	}
	fs.release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if s := fs.done.Load(); s != base+2 {
		t.Fatalf("%d fdatasyncs after the held one, want 2 (the held one, one shared by %d appends)", s-base, n)
	}
}
