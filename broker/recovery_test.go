package broker

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLog appends n records of known content to a 1-partition buffer and
// closes it. It returns the path of the last segment and the byte position
// of every record in it.
func writeLog(t *testing.T, dir string, n int, opts ...Option) (string, []int64) {
	t.Helper()
	b, err := Open(dir, append([]Option{WithPartitions(1), WithSync(SyncNone)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		mustAppend(t, b, "t", payload("t", i, 300), 1)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segFiles(t, dir, 0)
	return segs[len(segs)-1], framePositions(t, segs[len(segs)-1])
}

func framePositions(t *testing.T, path string) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	base, _ := parseSegName(filepath.Base(path))
	var pos []int64
	if _, err := scanSegment(f, fileSize(t, path), base, func(p int64, _ frameHeader) error {
		pos = append(pos, p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return pos
}

func modifyFile(t *testing.T, path string, fn func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, fn(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// offsetsOf reads a partition and returns the offsets seen, checking
// content.
func offsetsOf(t *testing.T, b *Broker, p int) []uint64 {
	t.Helper()
	c, err := b.Cursor("check", p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var offs []uint64
	for _, r := range drain(t, c) {
		if !bytes.Equal(r.Entries, payload("t", int(r.Offset), 300)) {
			t.Fatalf("record %d: content differs", r.Offset)
		}
		offs = append(offs, r.Offset)
	}
	return offs
}

func seq(from, to uint64, skip ...uint64) []uint64 {
	var out []uint64
outer:
	for i := from; i < to; i++ {
		for _, s := range skip {
			if i == s {
				continue outer
			}
		}
		out = append(out, i)
	}
	return out
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOpenOnTornWrite(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name     string
		tear     func(data []byte, pos []int64) []byte
		keep     uint64 // records kept
		tornFrom func(pos []int64, size int64) int64
	}{
		{"half a record", func(d []byte, pos []int64) []byte { return d[:pos[n-1]+(int64(len(d))-pos[n-1])/2] }, n - 1,
			func(pos []int64, _ int64) int64 { return pos[n-1] }},
		{"part of a header", func(d []byte, pos []int64) []byte { return d[:pos[n-1]+10] }, n - 1,
			func(pos []int64, _ int64) int64 { return pos[n-1] }},
		{"zero-filled tail", func(d []byte, _ []int64) []byte { return append(d, make([]byte, 4096)...) }, n,
			func(_ []int64, size int64) int64 { return size }},
		{"garbage tail", func(d []byte, _ []int64) []byte { return append(d, bytes.Repeat([]byte("garbage!"), 100)...) }, n,
			func(_ []int64, size int64) int64 { return size }},
		{"last record flipped", func(d []byte, pos []int64) []byte { d[pos[n-1]+40] ^= 0xff; return d }, n - 1,
			func(pos []int64, _ int64) int64 { return pos[n-1] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			seg, pos := writeLog(t, dir, n)
			size := fileSize(t, seg)
			modifyFile(t, seg, func(d []byte) []byte { return tc.tear(d, pos) })
			torn := fileSize(t, seg) - tc.tornFrom(pos, size)
			b := openT(t, dir, WithPartitions(1), WithSync(SyncNone))
			st := b.Stats()
			if got := fileSize(t, seg); got != tc.tornFrom(pos, size) {
				t.Fatalf("segment is %d bytes after recovery, want %d", got, tc.tornFrom(pos, size))
			}
			if got := b.m.tornBytes.Load(); got != uint64(torn) {
				t.Fatalf("torn bytes %d, want %d", got, torn)
			}
			if st.CorruptRecords != 0 {
				t.Fatalf("a torn tail counted %d corrupt records", st.CorruptRecords)
			}
			if st.Partitions[0].NextOffset != tc.keep {
				t.Fatalf("next offset %d, want %d", st.Partitions[0].NextOffset, tc.keep)
			}
			// the log goes on where the valid data ended
			if p := mustAppend(t, b, "t", payload("t", int(tc.keep), 300), 1); p.Offset != tc.keep {
				t.Fatalf("next append at %d, want %d", p.Offset, tc.keep)
			}
			if got := offsetsOf(t, b, 0); !equalU64(got, seq(0, tc.keep+1)) {
				t.Fatalf("offsets %v", got)
			}
		})
	}
}

func TestCorruptMiddleRecordSkipped(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name    string
		corrupt func(d []byte, pos []int64)
		lost    []uint64
	}{
		{"payload byte", func(d []byte, pos []int64) { d[pos[5]+100] ^= 1 }, []uint64{5}},
		{"magic", func(d []byte, pos []int64) { d[pos[5]] ^= 0x80 }, []uint64{5}},
		{"crc", func(d []byte, pos []int64) { d[pos[5]+5] ^= 0x10 }, []uint64{5}},
		{"length grown", func(d []byte, pos []int64) {
			binary.LittleEndian.PutUint32(d[pos[5]+8:], binary.LittleEndian.Uint32(d[pos[5]+8:])+500)
		}, []uint64{5}},
		{"length shrunk", func(d []byte, pos []int64) {
			binary.LittleEndian.PutUint32(d[pos[5]+8:], 3)
		}, []uint64{5}},
		{"offset", func(d []byte, pos []int64) { d[pos[5]+16] ^= 0x04 }, []uint64{5}},
		{"three in a row", func(d []byte, pos []int64) {
			d[pos[3]+60] ^= 1
			d[pos[4]+60] ^= 1
			d[pos[5]+60] ^= 1
		}, []uint64{3, 4, 5}},
		{"two apart", func(d []byte, pos []int64) {
			d[pos[2]+60] ^= 1
			d[pos[6]+60] ^= 1
		}, []uint64{2, 6}},
		{"first record", func(d []byte, pos []int64) { d[pos[0]+60] ^= 1 }, []uint64{0}},
		{"zeroed range", func(d []byte, pos []int64) {
			for i := pos[4] + 20; i < pos[6]+7; i++ {
				d[i] = 0
			}
		}, []uint64{4, 5, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			seg, pos := writeLog(t, dir, n)
			modifyFile(t, seg, func(d []byte) []byte { tc.corrupt(d, pos); return d })
			size := fileSize(t, seg)
			b := openT(t, dir, WithPartitions(1), WithSync(SyncNone))
			if got := b.Stats().CorruptRecords; got != uint64(len(tc.lost)) {
				t.Fatalf("corrupt records %d, want %d", got, len(tc.lost))
			}
			if fileSize(t, seg) != size {
				t.Fatal("recovery cut a segment with a corrupted record in the middle")
			}
			if got := offsetsOf(t, b, 0); !equalU64(got, seq(0, n, tc.lost...)) {
				t.Fatalf("offsets %v, want all but %v", got, tc.lost)
			}
			if got := b.Stats().CorruptRecords; got != uint64(len(tc.lost)) {
				t.Fatalf("reading counted again: %d", got)
			}
			if p := mustAppend(t, b, "t", nil, 0); p.Offset != n {
				t.Fatalf("next append at %d, want %d", p.Offset, n)
			}
		})
	}
}

func TestCorruptRecordInSealedSegmentSkippedByReaders(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 60, WithSegmentBytes(4<<10))
	segs := segFiles(t, dir, 0)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	first := segs[0]
	pos := framePositions(t, first)
	if len(pos) < 4 {
		t.Fatalf("%d records in the first segment", len(pos))
	}
	modifyFile(t, first, func(d []byte) []byte { d[pos[2]+50] ^= 0xff; return d })
	// and tear the tail of the second segment: its last record is lost
	second := segs[1]
	pos2 := framePositions(t, second)
	base2, _ := parseSegName(filepath.Base(second))
	lastOf2 := base2 + uint64(len(pos2)) - 1
	modifyFile(t, second, func(d []byte) []byte { return d[:len(d)-7] })

	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(4<<10))
	if got := b.Stats().CorruptRecords; got != 0 {
		t.Fatalf("Open read sealed segments: %d corrupt", got)
	}
	want := seq(0, 60, 2, lastOf2)
	for _, name := range []string{"a", "b"} {
		c, err := b.Cursor(name, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, r := range readAll(t, c) {
			got = append(got, r.Offset)
		}
		if !equalU64(got, want) {
			t.Fatalf("cursor %s read %v, want %v", name, got, want)
		}
	}
	if got := b.Stats().CorruptRecords; got != 2 {
		t.Fatalf("corrupt records %d, want 2 (counted once for two readers)", got)
	}
}

func TestOpenShortSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, 5)
	// a crash while creating the next segment left a few bytes
	short := filepath.Join(dir, partDirName(0), segName(5))
	if err := os.WriteFile(short, []byte("LSHP"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone))
	if got := fileSize(t, short); got != segHeaderSize {
		t.Fatalf("short segment is %d bytes, want a rewritten header", got)
	}
	if p := mustAppend(t, b, "t", payload("t", 5, 300), 1); p.Offset != 5 {
		t.Fatalf("append at %d", p.Offset)
	}
	if got := offsetsOf(t, b, 0); !equalU64(got, seq(0, 6)) {
		t.Fatalf("offsets %v", got)
	}
}

func TestOpenCorruptSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	seg, _ := writeLog(t, dir, 5)
	modifyFile(t, seg, func(d []byte) []byte { d[3] ^= 0xff; return d })
	b := openT(t, dir, WithPartitions(1), WithSync(SyncNone))
	if got := offsetsOf(t, b, 0); !equalU64(got, seq(0, 5)) {
		t.Fatalf("offsets %v", got)
	}
}

func TestOpenRefusesNewerSegmentVersion(t *testing.T) {
	dir := t.TempDir()
	seg, _ := writeLog(t, dir, 2)
	modifyFile(t, seg, func(d []byte) []byte {
		binary.LittleEndian.PutUint16(d[8:], segVersion+1)
		binary.LittleEndian.PutUint32(d[28:], crc32c(d[:28]))
		return d
	})
	_, err := Open(dir, WithPartitions(1))
	if err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("Open of a newer segment: %v", err)
	}
}

func FuzzScanSegment(f *testing.F) {
	var seg []byte
	var hdr [segHeaderSize]byte
	putSegHeader(hdr[:], 0, 7)
	seg = append(seg, hdr[:]...)
	for i := 0; i < 4; i++ {
		seg = encodeFrame(seg, uint64(7+i), "tag", payload("t", i, 40), 1, 0)
	}
	f.Add(seg, 40, byte(1))
	f.Add(seg, 0, byte(0))
	f.Add([]byte{}, 0, byte(0))
	f.Fuzz(func(t *testing.T, data []byte, at int, x byte) {
		if len(data) > 0 {
			data = bytes.Clone(data)
			i := at % len(data)
			if i < 0 {
				i = -i
			}
			data[i] ^= x
		}
		res, err := scanSegment(bytes.NewReader(data), int64(len(data)), 7, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.validEnd > int64(len(data)) || res.records < 0 {
			t.Fatalf("bad result %+v", res)
		}
		for _, b := range res.bad {
			if b.start >= b.end || b.end > int64(len(data)) {
				t.Fatalf("bad span %+v", b)
			}
		}
	})
}
