package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/internal/testutil"
)

func TestRetentionRemovesOnlyConsumedSegments(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(4<<10))
	for i := 0; i < 100; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	nseg := len(segFiles(t, dir, 0))
	fast, err := b.Cursor("fast", 0)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := b.Cursor("slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := fast.Commit(99); err != nil {
		t.Fatal(err)
	}
	if err := slow.Commit(49); err != nil {
		t.Fatal(err)
	}
	// every segment whose records are all < 50 goes, no other
	testutil.CheckFor(t, 5*time.Second, func() error {
		st := b.Stats().Partitions[0]
		if st.FirstOffset == 0 {
			return errors.New("nothing deleted yet")
		}
		return nil
	})
	st := b.Stats().Partitions[0]
	if st.FirstOffset > 50 {
		t.Fatalf("first retained offset %d: a segment the slow cursor had not consumed was deleted", st.FirstOffset)
	}
	b.mustSegmentsCoverFrom(t, 0, 50)
	if err := slow.Commit(99); err != nil {
		t.Fatal(err)
	}
	// The file goes first, then the accounting: poll for both.
	testutil.CheckFor(t, 5*time.Second, func() error {
		files := segFiles(t, dir, 0)
		if n := len(files); n != 1 {
			return fmt.Errorf("%d segments left of %d", n, nseg)
		}
		// a consumed segment is kept to be written over (WithSegmentReuse):
		// its bytes count
		spares := spareFiles(t, dir, 0)
		if len(spares) != 1 {
			return fmt.Errorf("%d spare segment files, want 1", len(spares))
		}
		if got, want := b.Stats().Bytes, fileSize(t, files[0])+fileSize(t, spares[0]); got != want {
			return fmt.Errorf("accounted %d bytes, the last segment and the spare have %d", got, want)
		}
		return nil
	})
}

// mustSegmentsCoverFrom checks that the segment holding offset off is kept.
func (b *Broker) mustSegmentsCoverFrom(t *testing.T, p int, off uint64) {
	t.Helper()
	part := b.parts[p]
	part.mu.Lock()
	defer part.mu.Unlock()
	if part.segs[0].base > off {
		t.Fatalf("segment holding %d deleted", off)
	}
}

func TestRetentionWithoutCursorsKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(4<<10))
	for i := 0; i < 50; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	n := len(segFiles(t, dir, 0))
	b.kickRetention()
	b.parts[0].applyRetention()
	if got := len(segFiles(t, dir, 0)); got != n {
		t.Fatalf("%d segments deleted without any cursor", n-got)
	}
}

func TestWhenFullBlock(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithMaxBytes(32<<10), WithSegmentBytes(4<<10))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := b.Append(ctx, "t", payload("t", n, 1000), 1)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 100 {
			t.Fatal("the buffer never filled")
		}
	}
	if st := b.Stats(); st.Bytes > st.MaxBytes || st.FullWaits == 0 {
		t.Fatalf("bytes %d of %d, waits %d", st.Bytes, st.MaxBytes, st.FullWaits)
	}
	// a blocked append goes through once the output consumed
	done := make(chan error, 1)
	go func() {
		_, err := b.Append(context.Background(), "t", payload("t", n, 1000), 1)
		done <- err
	}()
	recs := readN(t, c, n)
	if err := c.Commit(recs[len(recs)-1].Offset); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("append still blocked after the output consumed everything")
	}
	if r := readN(t, c, 1)[0]; r.Offset != uint64(n) {
		t.Fatalf("record %d, want %d: nothing may be lost", r.Offset, n)
	}
	if st := b.Stats(); st.DroppedRecords != 0 {
		t.Fatalf("block dropped %d", st.DroppedRecords)
	}
}

func TestWhenFullDropOldest(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithMaxBytes(32<<10), WithSegmentBytes(4<<10),
		WithWhenFull(DropOldest), WithLogger(zap.New(core)))
	lagging, err := b.Cursor("lagging", 0)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	var events uint64
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := b.Append(ctx, "t", payload("t", i, 1000), i%7); err != nil {
			t.Fatalf("append %d: %v (drop_oldest must not block)", i, err)
		}
		cancel()
		events += uint64(i % 7)
	}
	st := b.Stats()
	if st.Bytes > st.MaxBytes {
		t.Fatalf("%d bytes over max %d", st.Bytes, st.MaxBytes)
	}
	if st.DroppedRecords == 0 {
		t.Fatal("nothing dropped")
	}
	// the lagging cursor was moved past what was dropped: what it reads and
	// what was dropped add up exactly
	if lagging.Committed() != st.DroppedRecords {
		t.Fatalf("cursor committed %d, dropped %d", lagging.Committed(), st.DroppedRecords)
	}
	recs := readAll(t, lagging)
	var readEvents uint64
	for i, r := range recs {
		if r.Offset != st.DroppedRecords+uint64(i) {
			t.Fatalf("offset %d at %d", r.Offset, i)
		}
		readEvents += uint64(r.Count)
	}
	if uint64(len(recs))+st.DroppedRecords != n || readEvents+st.DroppedEvents != events {
		t.Fatalf("read %d + dropped %d records (events %d + %d), appended %d (%d)",
			len(recs), st.DroppedRecords, readEvents, st.DroppedEvents, n, events)
	}
	if st.DroppedBytes == 0 {
		t.Fatal("dropped bytes not counted")
	}
	warned := logs.FilterField(zap.String("cursor", "lagging")).FilterMessageSnippet("dropped").Len()
	if warned == 0 {
		t.Fatal("no warning naming the lagging cursor")
	}
}

func TestDropOldestWithoutCursors(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(2), WithSync(SyncNone), WithMaxBytes(64<<10), WithSegmentBytes(4<<10),
		WithWhenFull(DropOldest))
	for i := 0; i < 300; i++ {
		mustAppend(t, b, fmt.Sprint("t", i%5), payload("t", i, 800), 1)
	}
	st := b.Stats()
	var kept uint64
	for _, p := range st.Partitions {
		kept += p.NextOffset - p.FirstOffset
	}
	if st.Bytes > st.MaxBytes || kept+st.DroppedRecords != 300 {
		t.Fatalf("bytes %d/%d, kept %d + dropped %d != 300", st.Bytes, st.MaxBytes, kept, st.DroppedRecords)
	}
}
