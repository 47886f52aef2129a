package broker

import (
	"context"
	"errors"
	"testing"
	"time"
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
			checkFor(t, 5*time.Second, time.Millisecond, func() error {
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
			checkFor(t, 5*time.Second, time.Millisecond, func() error {
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
