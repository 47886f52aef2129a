package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Regression tests for what a review of segment reuse found.

func spareCount(b *Broker) int {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	return b.spares
}

// writeSpareFile writes, as partition p's spare named by next, a file
// that starts with an intact header of base and is size bytes long.
func writeSpareFile(t *testing.T, dir string, p int, base, next uint64, size int) string {
	t.Helper()
	data := make([]byte, size)
	putSegHeader(data, p, base)
	path := filepath.Join(dir, partDirName(p), spareName(next))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// dirWithSpare returns a buffer directory of one partition with 4 KiB
// segments and a spare file that the next roll reuses.
func dirWithSpare(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	b0 := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10))
	_ = b0.Close()
	writeSpareFile(t, dir, 0, 0, 1, 4<<10)
	return dir
}

// wrapOpen opens segment files as the broker does and wraps them.
func wrapOpen(wrap func(f segFile, path string) segFile) func(path string, flag int) (segFile, error) {
	return func(path string, flag int) (segFile, error) {
		f, err := openOSFile(path, flag)
		if err != nil {
			return nil, err
		}
		return wrap(f, path), nil
	}
}

// A full buffer whose only consumed segment retention keeps as a spare
// frees nothing, so an append waiting for space must be woken to delete
// the spare; it waited until its context ended.
func TestReuseSpareKeptWakesBlockedAppend(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), WithMaxBytes(16<<10), WithSync(SyncNone), WithWhenFull(Block))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := b.Append(ctx, "t", payload("t", n, 600), 1)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	// read everything: the cursor leaves the sealed segments for the last
	readN(t, c, n)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := b.Append(ctx, "t", payload("t", n, 600), 1)
		done <- err
	}()
	waitUntil(t, func() bool { return b.Stats().FullWaits > 0 }) // it waits for space
	p := b.parts[0]
	p.mu.Lock()
	end := p.segs[0].next
	p.mu.Unlock()
	if err := c.Commit(end - 1); err != nil { // exactly the first segment
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("append waiting for space: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the append still waits for space 3s after a segment was consumed")
	}
	if got := spareCount(b); got != len(spareFiles(t, dir, 0)) {
		t.Fatalf("%d spares counted, %d spare files", got, len(spareFiles(t, dir, 0)))
	}
}

// A last segment with the intact header of a lower base and records of
// its own base after it (a power cut took the new header page but not the
// frames) is started again empty, and its records stay gone: before, they
// came back at the next Open behind shorter appends.
func TestReuseStaleHeaderRecordsDoNotComeBack(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithPartitions(1), WithSegmentBytes(4 << 10), WithSync(SyncNone)}
	b, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var base uint64
	for i := 0; ; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
		p := b.parts[0]
		p.mu.Lock()
		last := p.segs[len(p.segs)-1]
		nsegs, recs := len(p.segs), last.next-last.base
		base = last.base
		p.mu.Unlock()
		if nsegs == 2 && recs >= 6 {
			break
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// the header of a lower base, as a spare renamed to this name has
	path := filepath.Join(dir, partDirName(0), segName(base))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [segHeaderSize]byte
	putSegHeaderFlags(hdr[:], 0, 0, segFlagReused)
	if _, err := f.WriteAt(hdr[:], 0); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	b, err = Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Partitions[0].NextOffset != base || st.CorruptRecords != 0 {
		t.Fatalf("after the stale header: next offset %d (want %d), %d corrupt", st.Partitions[0].NextOffset, base, st.CorruptRecords)
	}
	pos := mustAppend(t, b, "t", []byte("short"), 1) // shorter than what was there
	if pos.Offset != base {
		t.Fatalf("appended at %d, want %d", pos.Offset, base)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, opts...)
	if got := b.Stats().Partitions[0].NextOffset; got != base+1 {
		t.Fatalf("next offset %d after reopening, want %d: records of the dropped segment came back", got, base+1)
	}
	c, err := b.Cursor("check", 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, c)
	if last := recs[len(recs)-1]; last.Offset != base || string(last.Entries) != "short" {
		t.Fatalf("last record %d %q, want %d \"short\"", last.Offset, last.Entries, base)
	}
	if n := b.Stats().CorruptRecords; n != 0 {
		t.Fatalf("%d corrupt records", n)
	}
}

// Every rename of segment reuse is made durable (directory fsync) before
// the renamed file is written over: otherwise after a power cut the old
// name can hold the new records. And the segment a reused one follows is
// synced before the new name is durable: otherwise a power cut can leave
// the new name and lose that segment's unsynced end, a gap readers count.
func TestReuseRenamesDurableBeforeWrites(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var events []string
	note := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	open := wrapOpen(func(f segFile, path string) segFile { return &notedFile{segFile: f, path: path, note: note} })
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), WithSync(SyncAlways),
		withOpenFile(open),
		withRename(func(o, n string) error {
			note("rename " + filepath.Base(o) + " " + filepath.Base(n))
			return os.Rename(o, n)
		}),
		withSyncDir(func(d string) error { note("syncdir"); return syncDir(d) }))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	// bursts of appends that do not wait for each other: segments roll
	// while the records before them are not synced yet
	for i := 0; i < 40 && b.m.segmentsReused.Load() < 3; i++ {
		var wg sync.WaitGroup
		for j := 0; j < 12; j++ {
			wg.Add(1)
			if err := b.AppendAsync(context.Background(), "t", payload("t", i*12+j, 500), 1, func(_ Pos, err error) {
				if err != nil {
					t.Error(err)
				}
				wg.Done()
			}); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		recs := readN(t, c, 12)
		if err := c.Commit(recs[len(recs)-1].Offset); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			r.Release()
		}
		waitUntil(t, func() bool { // retention ran
			p := b.parts[0]
			p.mu.Lock()
			defer p.mu.Unlock()
			return len(p.segs) == 1
		})
	}
	if b.m.segmentsReused.Load() < 3 {
		t.Fatalf("%d segments reused in 300 appends", b.m.segmentsReused.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	renames := 0
	for i, e := range events {
		name, ok := strings.CutPrefix(e, "rename ")
		if !ok {
			continue
		}
		renames++
		to := strings.Fields(name)[1]
		synced := true // a spare is not written under its own name
		for _, later := range events[i+1:] {
			if later == "syncdir" {
				break
			}
			if later == "write "+to {
				synced = false
				break
			}
		}
		if !synced {
			t.Fatalf("%s: the file is written before a directory fsync (events %v)", e, events[i:min(i+6, len(events))])
		}
		if !strings.HasSuffix(to, segSuffix) {
			continue // a consumed segment becoming the spare
		}
		// the segment written before it is synced before the new name is
		// durable
		for j := i - 1; j >= 0; j-- {
			if w, ok := strings.CutPrefix(events[j], "write "); ok {
				t.Fatalf("%s: %s written after its last fdatasync (events %v)", e, w, events[max(j-3, 0):i+1])
			}
			if strings.HasPrefix(events[j], "sync ") {
				break
			}
		}
	}
	if renames < 6 {
		t.Fatalf("%d renames seen for %d reuses", renames, b.m.segmentsReused.Load())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

type notedFile struct {
	segFile
	path string
	note func(string)
}

func (f *notedFile) Datasync() error {
	f.note("sync " + filepath.Base(f.path))
	return f.segFile.Datasync()
}

func (f *notedFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	f.note("write " + filepath.Base(f.path))
	return f.segFile.WriteVAt(bufs, off)
}

// A spare whose header is a segment's at or above the offset in its name
// (it was being written over as that segment when the power went) holds
// records a reuse could let through: Open deletes it. So it does the
// spares of partitions no longer appended to.
func TestReuseOpenDeletesUntrustedSpares(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(2), WithSegmentBytes(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, b, "t", payload("t", 0, 100), 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	bad := writeSpareFile(t, dir, 0, 900, 800, 4096) // header base above the name's offset
	old := writeSpareFile(t, dir, 1, 0, 1, 4096)     // partition 1 is not appended to below
	b = openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10))
	for _, f := range []string{bad, old} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Fatalf("%s kept at Open (%v)", f, err)
		}
	}
	if got := spareCount(b); got != 0 {
		t.Fatalf("%d spares counted", got)
	}
}

// An Open whose upgrade of a version 1 last segment takes the spare
// counts the spares right: it counted -1, and a full buffer then never
// deleted the spare that was left later.
func TestReuseUpgradeTailTakesSpare(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1), WithSegmentBytes(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, b, "t", payload("t", 0, 100), 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// make segment 0 a version 1 segment
	path := filepath.Join(dir, partDirName(0), segName(0))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(data[8:], 1) // version 1, CRC again
	binary.LittleEndian.PutUint32(data[28:], crc32.Checksum(data[0:28], crcTable))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	writeSpareFile(t, dir, 0, 0, 1, 4096)
	b = openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10))
	if got, files := spareCount(b), len(spareFiles(t, dir, 0)); got != files || got < 0 {
		t.Fatalf("%d spares counted, %d spare files", got, files)
	}
	if b.m.segmentsReused.Load() != 1 {
		t.Fatalf("the upgrade's roll reused %d spares, want 1", b.m.segmentsReused.Load())
	}
}

// buffer inspect and buffer check see a reused segment's earlier bytes as
// no problem, and inspect lists the spare and counts its bytes.
func TestReuseInspectAndCheck(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1), WithSegmentBytes(4<<10), WithSync(SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	stale := false
	for i := 0; i < 400 && !(stale && len(spareFiles(t, dir, 0)) == 1); i++ {
		mustAppend(t, b, "t", payload("t", i, 300+i*37%500), 1)
		r := readN(t, c, 1)[0]
		if err := c.Commit(r.Offset); err != nil {
			t.Fatal(err)
		}
		r.Release()
		for deadline := time.Now().Add(20 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			p := b.parts[0]
			p.mu.Lock()
			a := p.segs[len(p.segs)-1]
			stale = a.reused && a.credit > frameHeaderSize
			p.mu.Unlock()
			if stale && len(spareFiles(t, dir, 0)) == 1 {
				break // retention kept a spare meanwhile
			}
		}
	}
	if !stale || len(spareFiles(t, dir, 0)) != 1 {
		t.Fatalf("no reused active segment with earlier bytes (%v) and a spare (%d files)", stale, len(spareFiles(t, dir, 0)))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ir, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, f := range append(segFiles(t, dir, 0), spareFiles(t, dir, 0)...) {
		sum += fileSize(t, f)
	}
	ip := ir.Partitions[0]
	if len(ip.Spares) != 1 || ip.Bytes != sum {
		t.Fatalf("inspect: %d spares, %d bytes; the files: 1 spare, %d bytes", len(ip.Spares), ip.Bytes, sum)
	}
	for _, s := range ip.Segments {
		if s.Problems != 0 {
			t.Fatalf("inspect: segment %s has %d problems", s.Name, s.Problems)
		}
	}
	cr, err := Check(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if !cr.OK() {
		var sb strings.Builder
		_ = cr.WriteText(&sb)
		t.Fatalf("check: %s", sb.String())
	}
}

// A retention pass leaves a consumed segment a reader still holds for a
// later pass while the buffer is under half full; an append waiting for
// space must have that pass run (it waited out its deadline while the
// consumed segment stayed, the output having stalled without a commit).
func TestReuseHeldSegmentFreedForWaitingAppend(t *testing.T) {
	dir := t.TempDir()
	const K = 1024
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(24*K), WithMaxBytes(64*K), WithSync(SyncNone), WithWhenFull(Block))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	p := b.parts[0]
	nsegs := func() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.segs) }
	i := 0
	for nsegs() < 2 {
		mustAppend(t, b, "t", payload("t", i, 1000), 1)
		i++
	}
	p.mu.Lock()
	s0next := p.segs[0].next
	p.mu.Unlock()
	readN(t, c, int(s0next)) // the cursor sits on segment 0's last record
	passes := b.retentionPasses.Load()
	if err := c.Commit(s0next - 1); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return b.retentionPasses.Load() > passes })
	if nsegs() != 2 {
		t.Fatalf("%d segments: retention did not leave the segment the cursor holds", nsegs())
	}
	readN(t, c, 1) // the output reads on (segment 0 released) but stalls: no more commits
	// fill segment 1 without a roll
	for {
		p.mu.Lock()
		sz := p.active.size
		p.mu.Unlock()
		if sz+1100 > 24*K {
			break
		}
		mustAppend(t, b, "t", payload("t", i, 1000), 1)
		i++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = b.Append(ctx, "t", payload("t", i, 18*K), 1)
	b.spaceMu.Lock()
	used := b.used
	b.spaceMu.Unlock()
	p.mu.Lock()
	s0consumed := p.segs[0].next <= c.Committed()
	s0size := p.segs[0].size
	p.mu.Unlock()
	t.Logf("18K append: %v; used %d of %d; segments %d; oldest consumed: %v (%d bytes)", err, used, 64*K, nsegs(), s0consumed, s0size)
	if err != nil {
		t.Errorf("append waited for space for 2s while a consumed %d-byte segment stayed", s0size)
	}
}

// A roll onto a spare makes the new name durable at once: every segment
// sealed before it and not synced yet (SyncInterval) is synced first, or a
// power cut leaves a gap of never-acknowledged records that readers count
// as corrupted (only the sealed one was synced).
func TestReuseRollSyncsEarlierSealedSegments(t *testing.T) {
	dir := t.TempDir()
	base := []Option{WithPartitions(1), WithSegmentBytes(4 << 10)}
	b1 := openT(t, dir, base...)
	i := 0
	for {
		mustAppend(t, b1, "t", payload("t", i, 300), 1)
		i++
		p := b1.parts[0]
		p.mu.Lock()
		n, recs := len(p.segs), p.active.next-p.active.base
		p.mu.Unlock()
		if n == 3 && recs >= 2 {
			break
		}
	}
	_ = b1.Close()
	fs := newContentFS()
	b, err := Open(dir, append(base, WithSync(SyncInterval), WithSyncInterval(time.Hour),
		withOpenFile(fs.open), withRename(fs.rename), withSyncDir(fs.syncDir))...)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := b.parts[0]
	nsegs := func() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.segs) }
	appendUntil := func(n int) {
		for nsegs() < n {
			if err := b.AppendAsync(context.Background(), "t", payload("t", i, 300), 1, func(Pos, error) {}); err != nil {
				t.Fatal(err)
			}
			i++
			time.Sleep(time.Millisecond)
		}
	}
	appendUntil(4) // roll T -> U, a new file
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	s0next := p.segs[0].next
	p.mu.Unlock()
	readN(t, c, int(s0next)+1)
	if err := c.Commit(s0next - 1); err != nil {
		t.Fatal(err)
	}
	for k := 0; spareCount(b) == 0 && k < 100; k++ {
		time.Sleep(10 * time.Millisecond)
	}
	if spareCount(b) == 0 {
		t.Fatal("no spare kept")
	}
	appendUntil(4) // S0 left: 3 segments now; roll U -> V onto the spare
	p.mu.Lock()
	reused := p.active.reused
	p.mu.Unlock()
	if !reused {
		t.Fatal("the last roll did not reuse the spare")
	}
	outs := fs.cut(t, dir, rand.New(rand.NewPCG(1, 2)))
	b2, err := Open(outs[0], base...)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	_ = b2.Scan(context.Background(), 0, 0, func(Record) error { return nil })
	cr := b2.Stats().CorruptRecords
	if cr > 0 {
		t.Errorf("%d records counted corrupted after a power cut (never acknowledged: a gap in an earlier sealed segment)", cr)
	}
}

// failingSync fails the first armed fdatasync of segment 0's file, as a
// writeback error (EIO) is reported once per open file on Linux: the
// next fdatasync of the file succeeds although the pages were lost.
type failingSync struct {
	segFile
	path string
	arm  *atomic.Bool
}

func (f *failingSync) Datasync() error {
	if strings.HasSuffix(f.path, segName(0)) && f.arm.CompareAndSwap(true, false) {
		return errors.New("EIO (injected)")
	}
	return f.segFile.Datasync()
}

// The fdatasync a roll onto a spare makes before the new name is durable
// fails: the appends it covered must not be acknowledged (the syncer's
// next fdatasync of the same file succeeds, the error being reported
// once), and the partition is unhealthy. It was ignored: every append was
// acknowledged, Close returned nil.
func TestReuseRollSyncFailureNotAcknowledged(t *testing.T) {
	dir := dirWithSpare(t)
	var arm atomic.Bool
	open := wrapOpen(func(f segFile, path string) segFile { return &failingSync{segFile: f, path: path, arm: &arm} })
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), WithSync(SyncInterval),
		WithSyncInterval(time.Hour), withOpenFile(open))
	if spareCount(b) != 1 {
		t.Fatalf("spare not adopted: %d", spareCount(b))
	}
	arm.Store(true)
	var mu sync.Mutex
	var acked, failed, refused int
	var wg sync.WaitGroup
	for i := 0; i < 20 && arm.Load(); i++ {
		wg.Add(1)
		err := b.AppendAsync(context.Background(), "t", payload("t", i, 300), 1, func(_ Pos, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
			} else {
				acked++
			}
			wg.Done()
		})
		if err != nil { // the append that needed the roll
			wg.Done()
			refused++
		}
	}
	if arm.Load() {
		t.Fatal("no roll in 20 appends")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done: // the syncer hands the error on without waiting for its interval
	case <-time.After(5 * time.Second):
		_ = b.Close() // its final sync answers them
		<-done
		t.Errorf("the appends waiting for a sync got no answer before Close (%d acknowledged, %d failed)", acked, failed)
	}
	mu.Lock()
	defer mu.Unlock()
	if acked != 0 || failed == 0 || refused != 1 {
		t.Fatalf("after a failed fdatasync: %d acknowledged, %d failed, %d refused; want 0, >0, 1", acked, failed, refused)
	}
	if b.Healthy() == nil {
		t.Fatal("healthy after a failed fdatasync")
	}
}

// failingHeader fails header writes (offset 0) of new segments while
// armed.
type failingHeader struct {
	segFile
	path string
	arm  *atomic.Bool
}

func (f *failingHeader) WriteVAt(bufs [][]byte, off int64) (int, error) {
	if off == 0 && !strings.HasSuffix(f.path, segName(0)) && f.arm.Load() {
		return 0, errors.New("EIO (injected header write)")
	}
	return f.segFile.WriteVAt(bufs, off)
}

// A roll onto a spare whose header write fails removes the new name,
// which reuseSpare had made durable: the removal must be durable too
// before anything appended later is acknowledged, or after a power cut the
// name comes back with the spare's old header, Open starts an empty
// segment at its base and hides the acknowledged records the old segment
// took at those offsets.
func TestReuseFailedHeaderRemovalDurable(t *testing.T) {
	dir := dirWithSpare(t)
	var arm atomic.Bool
	var syncs atomic.Int32
	open := wrapOpen(func(f segFile, path string) segFile { return &failingHeader{segFile: f, path: path, arm: &arm} })
	b := openT(t, dir, WithPartitions(1), WithSegmentBytes(4<<10), WithSync(SyncAlways), withOpenFile(open),
		withSyncDir(func(d string) error { syncs.Add(1); return syncDir(d) }))
	arm.Store(true)
	failed := false
	for i := 0; i < 20 && !failed; i++ {
		_, err := b.Append(context.Background(), "t", payload("t", i, 400), 1)
		failed = err != nil
	}
	if !failed {
		t.Fatal("no roll in 20 appends")
	}
	arm.Store(false)
	before := syncs.Load() // reuseSpare's directory fsync is counted already
	pos, err := b.Append(context.Background(), "t", []byte("small"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(segFiles(t, dir, 0)) != 1 {
		t.Fatalf("the small record did not go to the old segment")
	}
	if syncs.Load() == before {
		t.Fatalf("record %d acknowledged with the removal of the failed segment's name not fsync'd", pos.Offset)
	}
}
