package broker

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func checkT(t *testing.T, dir string, repair bool) *CheckReport {
	t.Helper()
	r, err := Check(dir, repair)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return r
}

func kinds(r *CheckReport) string {
	var k []string
	for _, p := range r.Problems {
		k = append(k, p.Kind)
	}
	return strings.Join(k, ",")
}

func TestCheckCleanLog(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 30, WithSegmentBytes(4<<10))
	r := checkT(t, dir, false)
	if !r.OK() || len(r.Problems) != 0 || r.Records != 30 || r.Events != 30 {
		t.Fatalf("clean log: ok %v problems %s records %d", r.OK(), kinds(r), r.Records)
	}
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "OK: every record verified") {
		t.Fatalf("report:\n%s", out.String())
	}
}

func TestCheckFindsAndRepairs(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 60, WithSegmentBytes(4<<10))
	segs := segFiles(t, dir, 0)
	last := segs[len(segs)-1]
	// a corrupted record in a sealed segment, a torn tail in a sealed
	// segment, a corrupted record and a torn tail in the last segment, a
	// bad cursor file and a cursor past the end
	p0 := framePositions(t, segs[0])
	modifyFile(t, segs[0], func(d []byte) []byte { d[p0[1]+40] ^= 1; return d })
	modifyFile(t, segs[1], func(d []byte) []byte { return d[:len(d)-5] })
	pl := framePositions(t, last)
	if len(pl) < 3 {
		t.Fatalf("%d records in the last segment", len(pl))
	}
	modifyFile(t, last, func(d []byte) []byte { d[pl[0]+40] ^= 1; return append(d, 1, 2, 3) })
	cdir := filepath.Join(dir, partDirName(0), cursorsDir)
	if err := os.WriteFile(filepath.Join(cdir, "bad"+curSuffix), []byte("nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeCursorFile(filepath.Join(cdir, "ahead"+curSuffix), 999); err != nil {
		t.Fatal(err)
	}

	r := checkT(t, dir, false)
	if r.OK() {
		t.Fatal("Check says OK")
	}
	if got, want := kinds(r), "corrupt,corrupt,corrupt,torn-tail,cursor-range,bad-cursor"; got != want {
		t.Fatalf("problems %s, want %s", got, want)
	}
	var lost uint64
	for _, p := range r.Problems {
		lost += p.Records
		if p.Kind == "corrupt" && p.Pos < segHeaderSize {
			t.Fatalf("problem without a position: %+v", p)
		}
	}
	if lost != 3 {
		t.Fatalf("%d records lost, want 3", lost)
	}
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NOT OK", "torn-tail", filepath.Join("p0000", filepath.Base(last))} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}

	r = checkT(t, dir, true)
	if !r.OK() {
		out.Reset()
		r.WriteText(&out)
		t.Fatalf("not OK after repair:\n%s", out.String())
	}
	r = checkT(t, dir, false)
	if len(r.Problems) != 0 || r.KnownLost != 3 || r.Records != 57 {
		t.Fatalf("after repair: problems %s, known lost %d, records %d", kinds(r), r.KnownLost, r.Records)
	}
	// Open sees a clean log: nothing counted as corrupt, every good record
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(4<<10))
	got := offsetsOf(t, b, 0)
	if len(got) != 57 {
		t.Fatalf("read %d records after repair, want 57", len(got))
	}
	if st := b.Stats(); st.CorruptRecords != 0 || b.parts[0].m().tornBytes.Load() != 0 {
		t.Fatalf("Open after repair counted corrupt %d", st.CorruptRecords)
	}
}

func (p *partition) m() *metrics { return p.b.m }

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(2), WithSync(SyncNone), WithSegmentBytes(4<<10))
	if err != nil {
		t.Fatal(err)
	}
	tag0, tag1 := tagFor(0, 2, "a"), tagFor(1, 2, "b")
	for i := 0; i < 20; i++ {
		mustAppend(t, b, tag0, payload(tag0, i, 300), 3)
	}
	mustAppend(t, b, tag1, []byte("x"), 1)
	c, err := b.Cursor("kafka out", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(4); err != nil { // the first segment is not consumed: kept
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Partitions) != 2 || r.Partitions[0].Records != 20 || r.Partitions[0].Events != 60 || r.Partitions[1].NextOffset != 1 {
		t.Fatalf("partitions %+v", r.Partitions)
	}
	if len(r.Partitions[0].Segments) < 2 {
		t.Fatalf("segments %+v", r.Partitions[0].Segments)
	}
	if len(r.Cursors) != 1 || r.Cursors[0].Name != "kafka out" || r.Cursors[0].Committed != 5 || r.Cursors[0].Lag != 15 {
		t.Fatalf("cursors %+v", r.Cursors)
	}
	var out bytes.Buffer
	if err := r.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2 partitions", "PARTITION", "SEGMENT", segName(0), "kafka out", "CURSOR"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, out.String())
		}
	}
	t.Logf("\n%s", out.String())
}
