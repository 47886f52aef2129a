package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// Tests of segment reuse (WithSegmentReuse): a consumed segment kept as the
// partition's spare file and written over as a later segment.

func reuseOpts(extra ...Option) []Option {
	return append([]Option{WithPartitions(1), WithSegmentBytes(4 << 10), WithSync(SyncAlways)}, extra...)
}

// reuseSize varies record sizes: 60 to 959 bytes, about 7 records a 4 KiB
// segment.
func reuseSize(i int) int { return 60 + i*197%900 }

func reusePayload(tag string, i int) []byte { return payload(tag, i, reuseSize(i)) }

// lagReader reads every readable record of its partition, checks it, and
// commits all but the last one read. Committing a segment's last record
// only once the cursor has moved on to the next segment (and released the
// file) is what lets retention keep the consumed segment as a spare:
// retention does not keep a segment someone holds open.
type lagReader struct {
	t    *testing.T
	c    *Cursor
	tag  string
	next uint64 // offset the next record must have
}

func (r *lagReader) step() {
	r.t.Helper()
	for _, rec := range drain(r.t, r.c) {
		if rec.Offset != r.next {
			r.t.Fatalf("read offset %d, want %d", rec.Offset, r.next)
		}
		if want := reusePayload(r.tag, int(rec.Offset)); !bytes.Equal(rec.Entries, want) {
			r.t.Fatalf("record %d: content differs (%d bytes, want %d)", rec.Offset, len(rec.Entries), len(want))
		}
		rec.Release()
		r.next++
	}
	if r.next >= 2 {
		if err := r.c.Commit(r.next - 2); err != nil {
			r.t.Fatal(err)
		}
	}
}

// segView is a copy of what the broker knows of one segment.
type segView struct {
	path   string
	base   uint64
	next   uint64
	size   int64
	sealed bool
	reused bool
}

func segViews(b *Broker, part int) []segView {
	p := b.parts[part]
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]segView, 0, len(p.segs))
	for _, s := range p.segs {
		out = append(out, segView{path: s.path, base: s.base, next: s.next, size: s.size, sealed: s.sealed, reused: s.reused})
	}
	return out
}

func activeView(b *Broker, part int) segView {
	v := segViews(b, part)
	return v[len(v)-1]
}

// readSegHeaderFile reads the header of a segment file; ok is false when
// the file is gone (retention renamed or deleted it meanwhile).
func readSegHeaderFile(t *testing.T, path string) (h segHeader, size int64, ok bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return h, 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < segHeaderSize {
		t.Fatalf("%s: %d bytes, shorter than a header", path, len(data))
	}
	h, err = parseSegHeader(data[:segHeaderSize])
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h, int64(len(data)), true
}

func (b *Broker) sparesCounted() int {
	b.spaceMu.Lock()
	defer b.spaceMu.Unlock()
	return b.spares
}

// filesAtRest checks that Stats().Bytes equals the sizes of the segment
// and spare files of the first nparts partitions.
func filesAtRest(t *testing.T, b *Broker, dir string, nparts int) error {
	var sum int64
	for p := 0; p < nparts; p++ {
		for _, f := range append(segFiles(t, dir, p), spareFiles(t, dir, p)...) {
			st, err := os.Stat(f)
			if err != nil {
				return err
			}
			sum += st.Size()
		}
	}
	if got := b.Stats().Bytes; got != sum {
		return fmt.Errorf("Stats().Bytes %d, the segment and spare files have %d", got, sum)
	}
	return nil
}

// checkAll reads partition 0 of b with a new cursor and checks that it
// holds exactly the offsets from its first retained one to its end, each
// with reusePayload(tag, offset); it returns the first and next offsets.
func checkAll(t *testing.T, b *Broker, name, tag string) (uint64, uint64) {
	t.Helper()
	c, err := b.Cursor(name, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := b.Stats().Partitions[0]
	recs := drain(t, c)
	if uint64(len(recs)) != st.NextOffset-st.FirstOffset {
		t.Fatalf("read %d records, the partition holds offsets %d to %d", len(recs), st.FirstOffset, st.NextOffset)
	}
	for i, rec := range recs {
		want := st.FirstOffset + uint64(i)
		if rec.Offset != want {
			t.Fatalf("record %d has offset %d, want %d", i, rec.Offset, want)
		}
		if !bytes.Equal(rec.Entries, reusePayload(tag, int(rec.Offset))) {
			t.Fatalf("record %d: content differs", rec.Offset)
		}
		rec.Release()
	}
	return st.FirstOffset, st.NextOffset
}

// runUntil appends records of tag (and reads them with r) until cond holds
// or max records were appended. It returns the number of records appended.
func runUntil(t *testing.T, b *Broker, r *lagReader, tag string, from, max int, cond func() bool) int {
	t.Helper()
	i := from
	for ; i < max; i++ {
		mustAppend(t, b, tag, reusePayload(tag, i), 1)
		r.step()
		if cond() {
			return i + 1
		}
	}
	t.Fatalf("condition not met after %d records", max)
	return i
}

// 1. Segments are reused, a reused segment's header has the flag and,
// sealed, is cut at its records; every record is read once, intact, in
// order, never more than one spare file.
func TestSegmentReuseReadsExact(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, reuseOpts()...)
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: "r"}
	const n = 400
	reused := map[uint64]bool{} // bases of reused segments seen
	sealedCut, staleTails := 0, 0
	for i := 0; i < n; {
		for k := 0; k < 1+i%3 && i < n; k++ { // batches of 1 to 3
			mustAppend(t, b, "r", reusePayload("r", i), 1)
			i++
		}
		r.step()
		if sp := spareFiles(t, dir, 0); len(sp) > 1 {
			t.Fatalf("after %d records: %d spare files: %v", i, len(sp), sp)
		}
		for _, s := range segViews(b, 0) {
			h, size, ok := readSegHeaderFile(t, s.path)
			if !ok {
				continue // kept as the spare or deleted meanwhile
			}
			if h.base != s.base {
				t.Fatalf("%s: header base %d", s.path, h.base)
			}
			if got := h.flags&segFlagReused != 0; got != s.reused {
				t.Fatalf("%s: header reused flag %v, segment reused %v", s.path, got, s.reused)
			}
			if !s.reused {
				if size != s.size && s.sealed {
					t.Fatalf("%s: sealed segment of %d bytes in a file of %d", s.path, s.size, size)
				}
				continue
			}
			reused[s.base] = true
			switch {
			case s.sealed && size != s.size:
				t.Fatalf("%s: sealed reused segment of %d bytes in a file of %d: its earlier use was not cut", s.path, s.size, size)
			case s.sealed:
				sealedCut++
			case size > s.size:
				staleTails++
			}
		}
	}
	if r.next != n {
		t.Fatalf("read %d records of %d", r.next, n)
	}
	if err := c.Commit(n - 1); err != nil {
		t.Fatal(err)
	}
	got := b.m.segmentsReused.Load()
	t.Logf("%d segments reused (%d seen), %d checks of a sealed reused segment, %d of a stale tail", got, len(reused), sealedCut, staleTails)
	if got == 0 || len(reused) == 0 {
		t.Fatal("no segment was reused")
	}
	if uint64(len(reused)) > got {
		t.Fatalf("%d reused segments seen, the metric says %d", len(reused), got)
	}
	if sealedCut == 0 || staleTails == 0 {
		t.Fatalf("never saw a sealed reused segment (%d) or a reused active one with bytes of its earlier use (%d)", sealedCut, staleTails)
	}
	// a reused file counts with all its bytes, those of its earlier use too
	testutil.CheckFor(t, 5*time.Second, func() error {
		if len(segViews(b, 0)) != 1 {
			return errors.New("consumed segments not all gone yet")
		}
		return filesAtRest(t, b, dir, 1)
	})
}

// reusedActive runs a lag reader until the active segment is a reused file
// with records and at least 512 bytes of its earlier use after them.
func reusedActive(t *testing.T, b *Broker, r *lagReader, tag string, from int) int {
	t.Helper()
	return runUntil(t, b, r, tag, from, 2000, func() bool {
		a := activeView(b, 0)
		if !a.reused || a.next == a.base {
			return false
		}
		st, err := os.Stat(a.path)
		return err == nil && st.Size() >= a.size+512
	})
}

// 2. A process killed with a reused last segment: the copy of the
// directory (what the page cache holds) opens with every record, nothing
// of the file's earlier use, nothing torn or corrupt, and takes appends.
func TestSegmentReuseKilled(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, reuseOpts()...)
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: "k"}
	n := reusedActive(t, b, r, "k", 0)
	waitRetention(t, b, c)
	a := activeView(b, 0)
	fsize := fileSize(t, a.path)
	cp := copyDir(t, dir)

	b2 := openT(t, cp, reuseOpts()...)
	if got := b2.Stats().Partitions[0].NextOffset; got != uint64(n) {
		t.Fatalf("next offset %d after reopening, want %d", got, n)
	}
	if torn := b2.m.tornBytes.Load(); torn != 0 {
		t.Fatalf("%d torn bytes counted", torn)
	}
	if cr := b2.Stats().CorruptRecords; cr != 0 {
		t.Fatalf("%d corrupt records counted", cr)
	}
	if err := filesAtRest(t, b2, cp, 1); err != nil {
		t.Fatal(err)
	}
	a2 := activeView(b2, 0)
	if !a2.reused || a2.base != a.base || a2.size != a.size {
		t.Fatalf("last segment after reopening: %+v, before: %+v", a2, a)
	}
	cpath := filepath.Join(cp, partDirName(0), filepath.Base(a.path))
	if got := fileSize(t, cpath); got != fsize {
		t.Fatalf("reopening changed the reused file's size from %d to %d (want appends to write over it)", fsize, got)
	}
	first, next := checkAll(t, b2, "check", "k")
	if next != uint64(n) || first > a.base {
		t.Fatalf("offsets %d to %d, want up to %d from at most %d", first, next, n, a.base)
	}
	// appends go after the last record, over the earlier use
	const more = 30
	for i := n; i < n+more; i++ {
		mustAppend(t, b2, "k", reusePayload("k", i), 1)
	}
	if _, next := checkAll(t, b2, "check2", "k"); next != uint64(n+more) {
		t.Fatalf("next offset %d after %d appends", next, n+more)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	b3 := openT(t, cp, reuseOpts()...)
	if _, next := checkAll(t, b3, "check3", "k"); next != uint64(n+more) {
		t.Fatalf("next offset %d after reopening, want %d", next, n+more)
	}
	if cr, torn := b3.Stats().CorruptRecords, b3.m.tornBytes.Load(); cr != 0 || torn != 0 {
		t.Fatalf("second reopening: %d corrupt records, %d torn bytes", cr, torn)
	}
}

// waitRetention waits until retention removed every segment c consumed,
// so that no file goes while the directory is copied.
func waitRetention(t *testing.T, b *Broker, c *Cursor) {
	t.Helper()
	testutil.CheckFor(t, 5*time.Second, func() error {
		v := segViews(b, 0)
		if len(v) > 1 && v[0].next <= c.Committed() {
			return fmt.Errorf("segment %d consumed, not yet removed", v[0].base)
		}
		if files := segFiles(t, b.dir, 0); len(files) != len(v) {
			return fmt.Errorf("%d segment files, %d segments", len(files), len(v))
		}
		return nil
	})
}

// spareReady runs a lag reader until the partition has a spare file and
// an active segment with records.
func spareReady(t *testing.T, b *Broker, dir string, r *lagReader, tag string) int {
	t.Helper()
	return runUntil(t, b, r, tag, 0, 2000, func() bool {
		a := activeView(b, 0)
		return len(spareFiles(t, dir, 0)) == 1 && a.next > a.base
	})
}

// 3. A spare renamed to the next segment's name whose new header never
// reached the disk: it is taken as an empty segment, nothing of it
// surfaces, nothing is counted, the header is rewritten.
func TestSegmentReuseStaleHeader(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, reuseOpts()...)
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: "h"}
	n := spareReady(t, b, dir, r, "h")
	waitRetention(t, b, c)
	first := b.Stats().Partitions[0].FirstOffset
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	spare := spareFiles(t, dir, 0)[0]
	oldHdr, size, _ := readSegHeaderFile(t, spare)
	path := filepath.Join(dir, partDirName(0), segName(uint64(n)))
	if err := os.Rename(spare, path); err != nil {
		t.Fatal(err)
	}
	if oldHdr.base >= uint64(n) || size < 2<<10 {
		t.Fatalf("spare of base %d, %d bytes: not a stale file of a lower base", oldHdr.base, size)
	}

	b2 := openT(t, dir, reuseOpts()...)
	if cr, torn := b2.Stats().CorruptRecords, b2.m.tornBytes.Load(); cr != 0 || torn != 0 {
		t.Fatalf("%d corrupt records, %d torn bytes counted", cr, torn)
	}
	h, _, _ := readSegHeaderFile(t, path)
	if h.base != uint64(n) {
		t.Fatalf("header after reopening: base %d, want %d", h.base, n)
	}
	a := activeView(b2, 0)
	if a.base != uint64(n) || a.size != segHeaderSize || a.next != uint64(n) {
		t.Fatalf("last segment: %+v", a)
	}
	if err := filesAtRest(t, b2, dir, 1); err != nil {
		t.Fatal(err)
	}
	if got, next := checkAll(t, b2, "check", "h"); got != first || next != uint64(n) {
		t.Fatalf("offsets %d to %d, want %d to %d", got, next, first, n)
	}
	const more = 20
	for i := n; i < n+more; i++ {
		mustAppend(t, b2, "h", reusePayload("h", i), 1)
	}
	if _, next := checkAll(t, b2, "check2", "h"); next != uint64(n+more) {
		t.Fatalf("next offset %d, want %d", next, n+more)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	b3 := openT(t, dir, reuseOpts()...)
	if got, next := checkAll(t, b3, "check3", "h"); got != first || next != uint64(n+more) {
		t.Fatalf("after reopening: offsets %d to %d, want %d to %d", got, next, first, n+more)
	}
	if cr, torn := b3.Stats().CorruptRecords, b3.m.tornBytes.Load(); cr != 0 || torn != 0 {
		t.Fatalf("second reopening: %d corrupt records, %d torn bytes", cr, torn)
	}
}

// 4. A spare holding offsets at or above the next segment's base (offsets
// restarted) is deleted at the roll, not written over.
func TestSegmentReuseSpareAboveBaseDeleted(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, reuseOpts()...)
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: "a"}
	n := spareReady(t, b, dir, r, "a")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	spare := spareFiles(t, dir, 0)[0]
	high := filepath.Join(dir, partDirName(0), spareName(uint64(n+1000)))
	if err := os.Rename(spare, high); err != nil {
		t.Fatal(err)
	}

	b2 := openT(t, dir, reuseOpts()...) // no cursor: no retention, no new spare
	if got := b2.sparesCounted(); got != 1 {
		t.Fatalf("%d spares counted at Open, want 1", got)
	}
	if err := filesAtRest(t, b2, dir, 1); err != nil {
		t.Fatal(err)
	}
	base := activeView(b2, 0).base
	i := n
	for ; activeView(b2, 0).base == base; i++ {
		if i > n+100 {
			t.Fatal("no roll")
		}
		mustAppend(t, b2, "a", reusePayload("a", i), 1)
	}
	if got := b2.m.segmentsReused.Load(); got != 0 {
		t.Fatalf("%d segments reused from a spare holding offsets up to %d, the new segment's base is below", got, n+1000)
	}
	if sp := spareFiles(t, dir, 0); len(sp) != 0 {
		t.Fatalf("spare files left: %v", sp)
	}
	if got := b2.sparesCounted(); got != 0 {
		t.Fatalf("%d spares counted, want 0", got)
	}
	a := activeView(b2, 0)
	h, size, _ := readSegHeaderFile(t, a.path)
	if h.flags != 0 || a.reused || size != a.size {
		t.Fatalf("new segment: flags %#x, reused %v, file %d bytes for %d: not a new file", h.flags, a.reused, size, a.size)
	}
	if err := filesAtRest(t, b2, dir, 1); err != nil {
		t.Fatal(err)
	}
	if _, next := checkAll(t, b2, "check", "a"); next != uint64(i) {
		t.Fatalf("next offset %d, want %d", next, i)
	}
}

// 5. A full buffer deletes spares before an append waits: appends go on in
// the spare's room, and the accounting matches the files.
func TestSegmentReuseSpareDroppedWhenFull(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 16 << 10 // two partitions of 4 KiB segments
	b := openT(t, dir, WithPartitions(2), WithSegmentBytes(4<<10), WithSync(SyncAlways), WithMaxBytes(maxBytes), WithWhenFull(Block))
	tag0, tag1 := tagFor(0, 2, "s"), tagFor(1, 2, "f")
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: tag0}
	spareReady(t, b, dir, r, tag0)
	spareSize := fileSize(t, spareFiles(t, dir, 0)[0])
	testutil.CheckFor(t, 5*time.Second, func() error { return filesAtRest(t, b, dir, 2) })
	p0Bytes := b.Stats().Partitions[0].Bytes
	if b.Stats().FullWaits != 0 {
		t.Fatal("appends waited before the test")
	}

	// partition 1 has no cursor: nothing of it is ever deleted
	var appended int64
	spareGoneAt := -1
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatal("appends never blocked")
		}
		data := payload(tag1, i, 500)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := b.Append(ctx, tag1, data, 1)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		appended += int64(len(data))
		if spareGoneAt < 0 && len(spareFiles(t, dir, 0)) == 0 {
			spareGoneAt = i
			if fw := b.Stats().FullWaits; fw != 0 {
				t.Fatalf("%d appends waited while a spare file held %d bytes", fw, spareSize)
			}
		}
		if got := b.Stats().Bytes; got > maxBytes {
			t.Fatalf("Stats().Bytes %d above max %d", got, maxBytes)
		}
	}
	if spareGoneAt < 0 {
		t.Fatal("the spare file was not deleted when the buffer was full")
	}
	if got := b.sparesCounted(); got != 0 {
		t.Fatalf("%d spares counted", got)
	}
	p1Bytes := b.Stats().Partitions[1].Bytes
	if room := maxBytes - spareSize - p0Bytes; p1Bytes <= room {
		t.Fatalf("partition 1 holds %d bytes, no more than the %d the spare left room for", p1Bytes, room)
	}
	if b.m.segmentsReused.Load() != 0 {
		t.Fatal("the spare was reused, not deleted")
	}
	t.Logf("spare of %d bytes deleted at append %d; partition 1 grew to %d bytes (%d appended)", spareSize, spareGoneAt, p1Bytes, appended)
	if err := filesAtRest(t, b, dir, 2); err != nil {
		t.Fatal(err)
	}
}

// 7. Without reuse no spare file is ever kept, consumed segments are
// deleted and the accounting is the segment files; a spare left by an
// earlier run is deleted at Open.
func TestSegmentReuseOff(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, reuseOpts(WithSegmentReuse(false))...)
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: "o"}
	const n = 300
	for i := 0; i < n; i++ {
		mustAppend(t, b, "o", reusePayload("o", i), 1)
		r.step()
		if sp := spareFiles(t, dir, 0); len(sp) != 0 {
			t.Fatalf("spare files with reuse off: %v", sp)
		}
	}
	if err := c.Commit(n - 1); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if segs := segFiles(t, dir, 0); len(segs) != 1 {
			return fmt.Errorf("%d segment files, want 1", len(segs))
		}
		return filesAtRest(t, b, dir, 1)
	})
	if got := b.m.segmentsReused.Load(); got != 0 {
		t.Fatalf("%d segments reused with reuse off", got)
	}
	if len(spareFiles(t, dir, 0)) != 0 || b.sparesCounted() != 0 {
		t.Fatal("spare with reuse off")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// a spare left by a run with reuse on
	dir2 := t.TempDir()
	b2 := openT(t, dir2, reuseOpts()...)
	c2, err := b2.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	n2 := spareReady(t, b2, dir2, &lagReader{t: t, c: c2, tag: "o"}, "o")
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	b3 := openT(t, dir2, reuseOpts(WithSegmentReuse(false))...)
	if sp := spareFiles(t, dir2, 0); len(sp) != 0 {
		t.Fatalf("spare files after Open with reuse off: %v", sp)
	}
	if err := filesAtRest(t, b3, dir2, 1); err != nil {
		t.Fatal(err)
	}
	base := activeView(b3, 0).base
	for i := n2; activeView(b3, 0).base == base; i++ {
		mustAppend(t, b3, "o", reusePayload("o", i), 1)
	}
	if got := b3.m.segmentsReused.Load(); got != 0 {
		t.Fatalf("%d segments reused", got)
	}
	if err := filesAtRest(t, b3, dir2, 1); err != nil {
		t.Fatal(err)
	}
}

// 8. A sealed reused segment whose earlier use was not cut (a kill between
// the roll and the truncate, or a failed truncate), followed by copies of
// its own frames, garbage and frames of offsets past the next segment's
// first: readers stop at its end, nothing counted.
func TestSegmentReuseSealedStaleTail(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, reuseOpts()...)
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &lagReader{t: t, c: c, tag: "s"}
	n := reusedActive(t, b, r, "s", 0)
	waitRetention(t, b, c)
	target := activeView(b, 0)
	// from now on a cursor at the oldest record holds every segment
	hold, err := b.Cursor("hold", 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = hold
	n = runUntil(t, b, r, "s", n, n+200, func() bool {
		v := segViews(b, 0)
		return len(v) >= 3 && v[len(v)-2].base > target.base
	})
	first := b.Stats().Partitions[0].FirstOffset
	v := segViews(b, 0)
	later := v[len(v)-1] // its offsets are above the one after target's
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if first > target.base {
		t.Fatalf("segment %d deleted (first offset %d)", target.base, first)
	}
	h, size, _ := readSegHeaderFile(t, target.path)
	if h.flags&segFlagReused == 0 {
		t.Fatal("target segment not flagged reused")
	}
	own, err := os.ReadFile(target.path)
	if err != nil {
		t.Fatal(err)
	}
	laterData, err := os.ReadFile(later.path)
	if err != nil {
		t.Fatal(err)
	}
	var tail []byte
	tail = append(tail, own[segHeaderSize:size]...)                  // its own frames again
	tail = append(tail, bytes.Repeat([]byte("stale bytes "), 40)...) // garbage
	tail = append(tail, laterData[segHeaderSize:]...)                // frames of later offsets (not the next ones)
	f, err := os.OpenFile(target.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(tail); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	b2 := openT(t, dir, reuseOpts()...)
	if err := filesAtRest(t, b2, dir, 1); err != nil {
		t.Fatal(err)
	}
	if got, next := checkAll(t, b2, "fresh", "s"); got != first || next != uint64(n) {
		t.Fatalf("offsets %d to %d, want %d to %d", got, next, first, n)
	}
	c2, err := b2.Cursor("hold", 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := drain(t, c2)
	if len(recs) == 0 || recs[0].Offset != first || recs[len(recs)-1].Offset != uint64(n-1) {
		t.Fatalf("cursor hold read %d records", len(recs))
	}
	for i, rec := range recs {
		if rec.Offset != first+uint64(i) || !bytes.Equal(rec.Entries, reusePayload("s", int(rec.Offset))) {
			t.Fatalf("cursor hold: record %d at offset %d differs", i, rec.Offset)
		}
	}
	if cr := b2.Stats().CorruptRecords; cr != 0 {
		t.Fatalf("%d corrupt records counted for the bytes after a sealed reused segment's records", cr)
	}
}

// contentFS models what a power cut leaves of the segment files by their
// content, which writing over a file needs (powerFS models only sizes).
// Files are followed by identity (inode) across renames:
//   - an fdatasync makes durable the content the file had when it began;
//   - directory operations (create, rename, remove) become durable in the
//     order they were made, as a journaling filesystem commits them; a
//     directory fsync (withSyncDir) makes every earlier one durable. A cut
//     keeps the durable ones and any prefix of the others: a created file
//     may be gone, a renamed one back under its old name, a removed one
//     back (with its last synced content);
//   - a file met for the first time (there at Open, or a spare renamed) is
//     durable as it is then.
//
// Simplifications: bytes no fdatasync covered never reach the disk (no
// partial writeback); a removal (os.Remove, not hooked) is seen at the next
// hooked call, so it may be ordered later than it was; the directory fsync
// of removeSegments (not hooked) makes nothing durable in the model (the
// removals it covers may come back); cursor files and META are taken as
// they are when the cut is taken.
type contentFS struct {
	mu      sync.Mutex
	names   map[string]*cfsFile // durable directory entries
	pending []cfsOp             // directory operations not yet durable, in order
	live    []*cfsFile          // files not removed
	log     []string            // what the model saw (failure messages)
}

type cfsFile struct {
	info   os.FileInfo // identity
	live   string      // current name
	synced []byte      // durable content
}

type cfsOp struct {
	kind     string // create, rename, remove
	f        *cfsFile
	from, to string
}

func newContentFS() *contentFS { return &contentFS{names: map[string]*cfsFile{}} }

func (fs *contentFS) logLocked(format string, args ...any) {
	fs.log = append(fs.log, fmt.Sprintf(format, args...))
}

func applyOp(names map[string]*cfsFile, op cfsOp) {
	switch op.kind {
	case "create":
		names[op.to] = op.f
	case "rename":
		if names[op.from] == op.f {
			delete(names, op.from)
		}
		names[op.to] = op.f
	case "remove":
		for k, v := range names {
			if v == op.f {
				delete(names, k)
			}
		}
	}
}

func (fs *contentFS) findLocked(path string) *cfsFile {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	for _, f := range fs.live {
		if f.live == path && os.SameFile(f.info, st) {
			return f
		}
	}
	return nil
}

// removedLocked records the removal of the files no longer there.
func (fs *contentFS) removedLocked() {
	live := fs.live[:0]
	for _, f := range fs.live {
		if st, err := os.Lstat(f.live); err != nil || !os.SameFile(st, f.info) {
			fs.pending = append(fs.pending, cfsOp{kind: "remove", f: f})
			fs.logLocked("remove %s", filepath.Base(f.live))
			continue
		}
		live = append(live, f)
	}
	clear(fs.live[len(live):])
	fs.live = live
}

// trackLocked returns the file at path, met now as durable as it is if it
// is new to the model.
func (fs *contentFS) trackLocked(path string) (*cfsFile, error) {
	if f := fs.findLocked(path); f != nil {
		return f, nil
	}
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := &cfsFile{info: st, live: path, synced: data}
	fs.live = append(fs.live, f)
	fs.names[path] = f
	fs.logLocked("met %s, %d bytes", filepath.Base(path), len(data))
	return f, nil
}

func (fs *contentFS) open(path string, flag int) (segFile, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.removedLocked()
	var cf *cfsFile
	if _, err := os.Lstat(path); err == nil {
		if cf, err = fs.trackLocked(path); err != nil { // before O_TRUNC
			return nil, err
		}
	}
	f, err := openOSFile(path, flag)
	if err != nil {
		return nil, err
	}
	if cf == nil { // created
		st, err := os.Lstat(path)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		cf = &cfsFile{info: st, live: path}
		fs.live = append(fs.live, cf)
		fs.pending = append(fs.pending, cfsOp{kind: "create", f: cf, to: path})
		fs.logLocked("create %s", filepath.Base(path))
	}
	return &cfsHandle{segFile: f, fs: fs, f: cf}, nil
}

func (fs *contentFS) rename(oldpath, newpath string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.removedLocked()
	cf, err := fs.trackLocked(oldpath)
	if err != nil {
		return err
	}
	dst := fs.findLocked(newpath)
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	cf.live = newpath
	if dst != nil { // replaced: the rename removes it
		fs.live = slices.DeleteFunc(fs.live, func(f *cfsFile) bool { return f == dst })
	}
	fs.pending = append(fs.pending, cfsOp{kind: "rename", f: cf, from: oldpath, to: newpath})
	fs.logLocked("rename %s %s", filepath.Base(oldpath), filepath.Base(newpath))
	return nil
}

func (fs *contentFS) syncDir(dir string) error {
	fs.mu.Lock()
	fs.removedLocked() // removals before the fsync are covered
	fs.mu.Unlock()
	if err := syncDir(dir); err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	rest := fs.pending[:0]
	for _, op := range fs.pending {
		if p := op.to; (op.kind == "remove" && filepath.Dir(op.f.live) == dir) || filepath.Dir(p) == dir {
			applyOp(fs.names, op)
			continue
		}
		rest = append(rest, op)
	}
	clear(fs.pending[len(rest):])
	fs.pending = rest
	fs.logLocked("syncdir")
	return nil
}

type cfsHandle struct {
	segFile
	fs *contentFS
	f  *cfsFile
}

func (h *cfsHandle) Datasync() error {
	size, err := h.segFile.Size()
	if err != nil {
		return err
	}
	data := make([]byte, size)
	// short when the writer cut the file meanwhile (a reused segment
	// sealed at the roll)
	n, _ := h.segFile.ReadAt(data, 0)
	if err := h.segFile.Datasync(); err != nil {
		return err
	}
	h.fs.mu.Lock()
	h.f.synced = data[:n]
	h.fs.logLocked("datasync %s %d bytes", filepath.Base(h.f.live), n)
	h.fs.mu.Unlock()
	return nil
}

// cut writes to new directories what a power cut now may leave of dir:
// one with every directory operation made, one with a random prefix of
// those not durable. Each holds the model's durable segment files with
// their synced content, the segment and spare files the model never met
// as they are, and every other file (cursors, META) as it is.
func (fs *contentFS) cut(t *testing.T, dir string, rng *rand.Rand) []string {
	t.Helper()
	others := map[string][]byte{}
	var dirs []string
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // deleted meanwhile
			}
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if info.IsDir() {
			dirs = append(dirs, rel)
			return nil
		}
		if ext := filepath.Ext(path); ext == segSuffix || ext == spareSuffix || !info.Mode().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		others[rel] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fs.mu.Lock()
	fs.removedLocked()
	untracked := map[string][]byte{}
	for _, rel := range dirs {
		for _, ext := range []string{segSuffix, spareSuffix} {
			m, _ := filepath.Glob(filepath.Join(dir, rel, "*"+ext))
			for _, path := range m {
				if fs.findLocked(path) != nil {
					continue
				}
				if data, err := os.ReadFile(path); err == nil {
					untracked[path] = data
				}
			}
		}
	}
	var states []map[string][]byte
	for _, k := range []int{len(fs.pending), rng.IntN(len(fs.pending) + 1)} {
		names := maps.Clone(fs.names)
		for _, op := range fs.pending[:k] {
			applyOp(names, op)
		}
		st := maps.Clone(untracked)
		for path, f := range names {
			st[path] = f.synced
		}
		fs.logLocked("cut after %d of %d pending operations: %d files", k, len(fs.pending), len(st))
		states = append(states, st)
	}
	fs.mu.Unlock()
	var outs []string
	for _, st := range states {
		out := t.TempDir()
		for _, rel := range dirs {
			if err := os.MkdirAll(filepath.Join(out, rel), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for rel, data := range others {
			if err := os.WriteFile(filepath.Join(out, rel), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for path, data := range st {
			rel, _ := filepath.Rel(dir, path)
			if err := os.WriteFile(filepath.Join(out, rel), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		outs = append(outs, out)
	}
	return outs
}

// pwPayload names its record: "tag/seq/size|seq|..." (see pwParse).
func pwPayload(tag string, seq, size int) []byte {
	return payload(fmt.Sprintf("%s/%d/%d", tag, seq, size), seq, size)
}

// pwParse checks that entries is a pwPayload and returns its tag and seq.
func pwParse(entries []byte) (string, int, bool) {
	head, _, ok := strings.Cut(string(entries[:min(len(entries), 64)]), "|")
	if !ok {
		return "", 0, false
	}
	parts := strings.Split(head, "/")
	if len(parts) != 3 {
		return "", 0, false
	}
	seq, err1 := strconv.Atoi(parts[1])
	size, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || !bytes.Equal(entries, pwPayload(parts[0], seq, size)) {
		return "", 0, false
	}
	return parts[0], seq, true
}

// 6. Power cuts at random moments, modelled by content, while appends
// roll into reused segment files and a reader consumes: every
// acknowledged record not yet consumed is there once, intact, in order.
func TestSegmentReusePowerCut(t *testing.T) {
	fs := newContentFS()
	dir := t.TempDir()
	b, err := Open(dir, reuseOpts(withOpenFile(fs.open), withRename(fs.rename), withSyncDir(fs.syncDir))...)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	type ackd struct {
		tag string
		seq int
		off uint64
	}
	c, err := b.Cursor("r", 0)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		acked []ackd
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for k := 0; k < 3; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := fmt.Sprintf("pc%d", k)
			rng := rand.New(rand.NewPCG(uint64(k), 7))
			for seq := 0; !stop.Load(); seq++ {
				pos, err := b.Append(context.Background(), tag, pwPayload(tag, seq, 40+rng.IntN(900)), 1)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, ackd{tag, seq, pos.Offset})
				mu.Unlock()
			}
		}()
	}
	readerDone := make(chan struct{})
	go func() { // reads and commits all but the last record read
		defer close(readerDone)
		for {
			rec, err := c.Next(context.Background())
			if err != nil {
				return
			}
			if rec.Offset > 0 {
				_ = c.Commit(rec.Offset - 1)
			}
			rec.Release()
		}
	}()
	// the appenders and the reader end before the broker closes, also
	// when a check fails
	var once sync.Once
	finish := func() {
		once.Do(func() {
			stop.Store(true)
			wg.Wait()
			_ = c.Close()
			<-readerDone
		})
	}
	defer finish()

	rng := rand.New(rand.NewPCG(1, 2))
	const cuts = 12
	reusedTails := 0
	for i := 0; i < cuts; i++ {
		time.Sleep(time.Duration(1+rng.IntN(15)) * time.Millisecond)
		mu.Lock()
		ack := append([]ackd(nil), acked...)
		mu.Unlock()
		// acknowledged before the cut: durable; consumed after it: every
		// segment retention removed before the cut is below
		cps := fs.cut(t, dir, rng)
		consumed := c.Committed()
		for _, cp := range cps {
			if pwCheck(t, cp, consumed, func(yield func(tag string, seq int, off uint64) bool) {
				for _, a := range ack {
					if !yield(a.tag, a.seq, a.off) {
						return
					}
				}
			}) {
				reusedTails++
			}
		}
		if t.Failed() {
			fs.mu.Lock()
			t.Logf("model:\n%s", strings.Join(fs.log[max(0, len(fs.log)-150):], "\n"))
			fs.mu.Unlock()
			break
		}
	}
	finish()
	reused := b.m.segmentsReused.Load()
	t.Logf("%d segments reused, %d of %d cuts with a reused last segment", reused, reusedTails, 2*cuts)
	if reused == 0 || reusedTails == 0 {
		t.Fatalf("reuse not exercised: %d segments reused, %d cuts with a reused last segment", reused, reusedTails)
	}
}

// pwCheck opens the directory a cut left and checks it: consecutive
// offsets, intact payloads, each (tag, seq) once, every acknowledged record
// at or after consumed at its offset; then an append is read back. It
// reports whether the last segment was a reused file.
func pwCheck(t *testing.T, dir string, consumed uint64, acked func(func(string, int, uint64) bool)) bool {
	t.Helper()
	dump := describeDir(t, dir) // before Open repairs anything
	defer func() {
		if t.Failed() {
			t.Logf("the directory the cut left:\n%s", dump)
		}
	}()
	b, err := Open(dir, reuseOpts()...)
	if err != nil {
		t.Fatalf("open after the cut: %v", err)
	}
	defer b.Close()
	reusedTail := activeView(b, 0).reused
	c, err := b.Cursor("check", 0)
	if err != nil {
		t.Fatal(err)
	}
	st := b.Stats().Partitions[0]
	if st.FirstOffset > consumed {
		t.Errorf("first offset %d after the cut, the reader had consumed only up to %d", st.FirstOffset, consumed)
	}
	type key struct {
		tag string
		seq int
	}
	got := map[uint64]key{}
	seen := map[key]uint64{}
	expect, gaps := st.FirstOffset, uint64(0)
	for {
		// Next skips offsets whose records are gone (counted as corrupt)
		// and waits at the end: records not acknowledged may be lost after
		// a cut, the last of them too
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		rec, err := c.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if rec.Offset < expect || rec.Offset >= st.NextOffset {
			t.Errorf("offset %d after %d (partition %d to %d)", rec.Offset, expect-1, st.FirstOffset, st.NextOffset)
		}
		gaps += rec.Offset - expect
		expect = rec.Offset + 1
		tag, seq, ok := pwParse(rec.Entries)
		if !ok || tag != rec.Tag {
			t.Errorf("record %d (tag %q): not an intact record as appended", rec.Offset, rec.Tag)
			continue
		}
		k := key{tag, seq}
		if at, dup := seen[k]; dup {
			t.Errorf("%s #%d at offsets %d and %d", tag, seq, at, rec.Offset)
		}
		seen[k], got[rec.Offset] = rec.Offset, k
		rec.Release()
		if expect == st.NextOffset {
			break
		}
	}
	gaps += st.NextOffset - expect
	missing := 0
	acked(func(tag string, seq int, off uint64) bool {
		if off < consumed {
			return true
		}
		if k, ok := got[off]; !ok || k != (key{tag, seq}) {
			if missing++; missing <= 5 {
				t.Errorf("acknowledged %s #%d at offset %d: found %+v (present %v)", tag, seq, off, k, ok)
			}
		}
		return true
	})
	if missing > 0 {
		t.Errorf("%d acknowledged records missing (partition %d to %d, consumed %d, last segment reused %v)",
			missing, st.FirstOffset, st.NextOffset, consumed, reusedTail)
	}
	if cr := b.Stats().CorruptRecords; cr > gaps {
		t.Errorf("%d corrupt records counted, %d offsets without a record", cr, gaps)
	}
	if gaps > 0 {
		t.Logf("cut: %d offsets of records never acknowledged lost (partition %d to %d)", gaps, st.FirstOffset, st.NextOffset)
	}
	pos := mustAppend(t, b, "after", pwPayload("after", 0, 100), 1)
	rec := readN(t, c, 1)[0]
	if rec.Offset != pos.Offset || !bytes.Equal(rec.Entries, pwPayload("after", 0, 100)) {
		t.Errorf("append after the cut at %d, read back offset %d", pos.Offset, rec.Offset)
	}
	_ = c.Close()
	return reusedTail
}

// describeDir lists partition 0's segment and spare files: header, size
// and the offsets of the frames a scan finds (for failure messages).
func describeDir(t *testing.T, dir string) string {
	var sb strings.Builder
	for _, path := range append(segFiles(t, dir, 0), spareFiles(t, dir, 0)...) {
		data, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(&sb, "%s: %v\n", filepath.Base(path), err)
			continue
		}
		base, _ := parseSegName(filepath.Base(path))
		var hs string
		if len(data) >= segHeaderSize {
			h, err := parseSegHeader(data[:segHeaderSize])
			hs = fmt.Sprintf("header base %d flags %d err %v", h.base, h.flags, err)
		}
		var offs []uint64
		res, _ := scanSegment(bytes.NewReader(data), int64(len(data)), base, func(_ int64, h frameHeader) error {
			offs = append(offs, h.offset)
			return nil
		})
		fmt.Fprintf(&sb, "%s: %d bytes, %s; frames %v; valid end %d, bad %+v, stale header %v\n",
			filepath.Base(path), len(data), hs, offs, res.validEnd, res.bad, res.staleHeader)
	}
	return sb.String()
}
