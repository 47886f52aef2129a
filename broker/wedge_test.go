package broker

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestScanWhileRetentionDeletesDoesNotWedge: a slow Scan (an input
// recovering its positions at start) reads a segment that drop_oldest
// deletes under it. Its cursor is clamped forward to the oldest segment
// left; the partition's lock must be given back on that path, or every
// append, sync and reader of the partition waits forever.
func TestScanWhileRetentionDeletesDoesNotWedge(t *testing.T) {
	b, err := Open(t.TempDir(), WithPartitions(1), WithSegmentBytes(1<<20), WithSync(SyncNone),
		WithMaxBytes(4<<20), WithWhenFull(DropOldest))
	if err != nil {
		t.Fatal(err)
	}
	// No deferred Close: on a wedged partition it would wait forever.
	ctx := context.Background()
	e := make([]byte, 100<<10)
	for i := range 30 {
		if _, err := b.Append(ctx, "t", e, 1); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	scanned := make(chan error, 1)
	go func() {
		scanned <- b.Scan(ctx, 0, 0, func(Record) error {
			time.Sleep(20 * time.Millisecond) // slow: the buffer turns over meanwhile
			return nil
		})
	}()
	// Appends block on the partition's lock, not on their context, when it
	// is wedged: they run aside, and a wedge fails the test at once (a
	// deferred Close would wait on the lock too).
	appended := make(chan error, 1)
	go func() {
		for i := range 200 {
			if _, err := b.Append(ctx, "t", e, 1); err != nil {
				appended <- fmt.Errorf("append %d while a scan runs: %w", i, err)
				return
			}
		}
		appended <- nil
	}()
	for _, c := range []struct {
		what string
		ch   chan error
	}{{"the appends", appended}, {"the scan", scanned}} {
		select {
		case err := <-c.ch:
			if err != nil && c.what == "the appends" {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never returned: the partition is wedged (its lock held)", c.what)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
