package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	time.Sleep(50 * time.Millisecond) // let it wait for space
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
	open := func(path string, flag int) (segFile, error) {
		f, err := openOSFile(path, flag)
		if err != nil {
			return nil, err
		}
		return &notedFile{segFile: f, path: path, note: note}, nil
	}
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
		synced := false
		for _, later := range events[i+1:] {
			if later == "syncdir" {
				synced = true
				break
			}
			if later == "write "+to {
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
