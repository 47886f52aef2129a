package broker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// raceSync: while armed, the first Datasync of segment 0 (the syncer's)
// blocks until a second one (the writer's syncBeforeRoll) has failed with
// EIO; then the first returns nil, as Linux reports a writeback error once
// per open file.
type raceSync struct {
	segFile
	path string
	st   *raceState
}

type raceState struct {
	armed    atomic.Bool
	pending  atomic.Bool
	calls    atomic.Int32
	syncerIn chan struct{}
	gate     chan struct{}
	once     sync.Once
}

func (f *raceSync) Datasync() error {
	if !strings.HasSuffix(f.path, segName(0)) || !f.st.armed.Load() {
		return f.segFile.Datasync()
	}
	switch f.st.calls.Add(1) {
	case 1:
		f.st.pending.Store(true) // a writeback error of pages this sync covers
		close(f.st.syncerIn)
		select {
		case <-f.st.gate:
		case <-time.After(300 * time.Millisecond): // serialised: the writer waits for this sync
		}
		if f.st.pending.CompareAndSwap(true, false) {
			return errors.New("EIO (injected, syncer)")
		}
		return f.segFile.Datasync()
	case 2:
		defer f.st.once.Do(func() { close(f.st.gate) })
		if f.st.pending.CompareAndSwap(true, false) { // reported once per open file
			return errors.New("EIO (injected)")
		}
		return f.segFile.Datasync()
	}
	return f.segFile.Datasync()
}

// The writer's fdatasync before a roll onto a spare and the syncer's run
// one at a time (p.fsyncMu): a writeback error, reported to only one of
// them, reaches the appends its sync covered. Before, the syncer's
// concurrent fdatasync of the same file succeeded and acknowledged an
// append as durable while the writer's failed.
func TestReuseSyncErrorNotLostToConcurrentSync(t *testing.T) {
	dir := dirWithSpare(t)
	st := &raceState{syncerIn: make(chan struct{}), gate: make(chan struct{})}
	open := wrapOpen(func(f segFile, path string) segFile { return &raceSync{segFile: f, path: path, st: st} })
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), WithSync(SyncAlways), withOpenFile(open))
	if spareCount(b) != 1 {
		t.Fatalf("spare not adopted")
	}
	p := b.parts[0]
	i := 0
	for {
		p.mu.Lock()
		sz := p.active.size
		p.mu.Unlock()
		if sz+2*400 > 4<<10 {
			break
		}
		mustAppend(t, b, "t", payload("t", i, 300), 1)
		i++
	}
	st.armed.Store(true)
	res := make(chan error, 1)
	if err := b.AppendAsync(context.Background(), "t", payload("t", i, 300), 1, func(_ Pos, err error) { res <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.syncerIn:
	case <-time.After(3 * time.Second):
		t.Fatal("syncer never synced")
	}
	_, err := b.Append(context.Background(), "t", payload("t", i+1, 2000), 1)
	t.Logf("rolling append: %v", err)
	select {
	case err := <-res:
		if err == nil {
			t.Errorf("append covered by the failed fdatasync (writer's, before the roll) acknowledged as durable")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no answer")
	}
}
