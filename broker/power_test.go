package broker

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// powerFS remembers what an fdatasync and a directory fsync made durable,
// so that a test can cut the power at any moment: every file back to its
// last synced size, and files whose creation no directory fsync covered
// gone.
type powerFS struct {
	mu      sync.Mutex
	synced  map[string]int64 // path -> durable size
	created map[string]bool  // created, directory not yet fsync'd
}

type powerState struct {
	synced  map[string]int64
	durable map[string]bool
}

func newPowerFS() *powerFS {
	return &powerFS{synced: map[string]int64{}, created: map[string]bool{}}
}

func (fs *powerFS) open(path string, flag int) (segFile, error) {
	_, statErr := os.Stat(path)
	f, err := openOSFile(path, flag)
	if err != nil {
		return nil, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, known := fs.synced[path]; !known && !fs.created[path] {
		if os.IsNotExist(statErr) {
			fs.created[path] = true
			fs.synced[path] = 0
		} else {
			size, _ := f.Size() // there before: durable as it is
			fs.synced[path] = size
		}
	}
	return &powerFile{segFile: f, fs: fs, path: path}, nil
}

func (fs *powerFS) syncDir(dir string) error {
	if err := syncDir(dir); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for p := range fs.created {
		if filepath.Dir(p) == dir {
			delete(fs.created, p)
		}
	}
	return nil
}

func (fs *powerFS) snapshot() powerState {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	st := powerState{synced: map[string]int64{}, durable: map[string]bool{}}
	for p, n := range fs.synced {
		st.synced[p] = n
		st.durable[p] = !fs.created[p]
	}
	return st
}

type powerFile struct {
	segFile
	fs   *powerFS
	path string
}

func (f *powerFile) Datasync() error {
	size, err := f.segFile.Size()
	if err != nil {
		return err
	}
	if err := f.segFile.Datasync(); err != nil {
		return err
	}
	f.fs.mu.Lock()
	f.fs.synced[f.path] = size
	f.fs.mu.Unlock()
	return nil
}

// cutPower copies dir to a new directory as a power cut at st would have
// left it.
func cutPower(t *testing.T, dir string, st powerState) string {
	t.Helper()
	return copyTree(t, dir, func(path string, size int64) (int64, bool) {
		if s, ok := st.synced[path]; ok {
			// without a durable directory entry the file never reached the disk
			return s, st.durable[path]
		}
		return size, filepath.Ext(path) != segSuffix // a segment created after the cut is gone
	})
}

// copyDir copies a buffer directory as it is: what a process killed with
// SIGKILL leaves (the page cache survives).
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	return copyTree(t, dir, func(_ string, size int64) (int64, bool) { return size, true })
}

// copyTree copies dir to a new directory, each file cut to the length keep
// returns for it, or left out.
func copyTree(t *testing.T, dir string, keep func(path string, size int64) (int64, bool)) string {
	t.Helper()
	out := t.TempDir()
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		dst := filepath.Join(out, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		n, ok := keep(path, info.Size())
		if !ok {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		d, err := os.Create(dst)
		if err != nil {
			return err
		}
		defer d.Close()
		_, err = io.CopyN(d, src, n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAckedRecordsSurvivePowerCut checks that the acknowledgement is never
// a lie in the modes that promise durability: at any moment, what was
// acknowledged is covered by fdatasync and directory fsyncs, even across
// segment rolls.
func TestAckedRecordsSurvivePowerCut(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval} {
		t.Run(mode.String(), func(t *testing.T) {
			fs := newPowerFS()
			dir := t.TempDir()
			opts := []Option{WithPartitions(2), WithSegmentBytes(8 << 10), WithSync(mode), WithSyncInterval(time.Millisecond)}
			b, err := Open(dir, append(opts, withOpenFile(fs.open), withSyncDir(fs.syncDir))...)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var acked []crashAck
			var wg sync.WaitGroup
			for k := 0; k < 4; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tag := fmt.Sprintf("pw.%d", k)
					for i := 0; i < 150; i++ {
						data := payload(tag, i, 200+i*7%900)
						if k%2 == 0 {
							pos, err := b.Append(context.Background(), tag, data, 1)
							if err != nil {
								t.Error(err)
								return
							}
							mu.Lock()
							acked = append(acked, crashAck{tag: tag, seq: i, pos: pos})
							mu.Unlock()
							continue
						}
						err := b.AppendAsync(context.Background(), tag, data, 1, func(pos Pos, err error) {
							if err == nil {
								mu.Lock()
								acked = append(acked, crashAck{tag: tag, seq: i, pos: pos})
								mu.Unlock()
							}
						})
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			// cut the power at random moments while appends run
			type cut struct {
				acks int
				st   powerState
			}
			var cuts []cut
			rng := rand.New(rand.NewPCG(1, 2))
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
		loop:
			for {
				select {
				case <-done:
					break loop
				case <-time.After(time.Duration(rng.IntN(3000)) * time.Microsecond):
				}
				mu.Lock()
				n := len(acked) // acknowledged before the snapshot: synced before it
				mu.Unlock()
				cuts = append(cuts, cut{n, fs.snapshot()})
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if len(cuts) > 12 {
				cuts = cuts[len(cuts)-12:]
			}
			for _, c := range cuts {
				crashed := cutPower(t, dir, c.st)
				b, err := Open(crashed, opts...)
				if err != nil {
					t.Fatalf("open after a power cut: %v", err)
				}
				found := map[Pos]string{}
				for p := 0; p < b.Partitions(); p++ {
					cur, err := b.Cursor("v", p)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range drain(t, cur) {
						found[Pos{p, r.Offset}] = string(r.Entries)
					}
				}
				for _, a := range acked[:c.acks] {
					if found[a.pos] != string(payload(a.tag, a.seq, 200+a.seq*7%900)) {
						t.Fatalf("acknowledged %s #%d at %v lost by a power cut (%d acks before the cut)", a.tag, a.seq, a.pos, c.acks)
					}
				}
				if err := b.Close(); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d power cuts checked, last one after %d acks", len(cuts), cuts[len(cuts)-1].acks)
		})
	}
}
