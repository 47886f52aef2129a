package broker

import (
	"bytes"
	"testing"
)

// Records read through every path of readFrame (small frames copied out of
// the read buffer, large ones that take it whole, ones larger than it read
// on their own), with and without meta, keep their bytes while later
// records are read and released, and a released record's memory serves
// later reads without mixing bytes of two records.
func TestRecordReleaseKeepsContents(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncNone), WithSegmentBytes(64<<20))
	sizes := []int{10, 3000, 70 << 10, 200 << 10, 300 << 10, 5 << 10, 1 << 20, 100, 240 << 10, 64 << 10}
	want := make([][]byte, 0, 3*len(sizes))
	for round := 0; round < 3; round++ {
		for i, n := range sizes {
			e := payload("t", len(want), n)
			want = append(want, e)
			if i%3 == 0 {
				meta := []byte{byte(round), byte(i)}
				done := make(chan error, 1)
				if err := b.AppendAsyncMeta(t.Context(), "t", meta, e, 1, func(_ Pos, err error) { done <- err }); err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			} else {
				mustAppend(t, b, "t", e, 1)
			}
		}
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	var kept []Record // every third record is held, not released
	for i := range want {
		r := readN(t, c, 1)[0]
		if r.Offset != uint64(i) || !bytes.Equal(r.Entries, want[i]) {
			t.Fatalf("record %d (offset %d): %d bytes, want %d, equal %v", i, r.Offset, len(r.Entries), len(want[i]), bytes.Equal(r.Entries, want[i]))
		}
		if j := i % len(sizes); j%3 == 0 && (len(r.Meta) != 2 || r.Meta[0] != byte(i/len(sizes)) || r.Meta[1] != byte(j)) {
			t.Fatalf("record %d: meta %v", i, r.Meta)
		} else if j%3 != 0 && r.Meta != nil {
			t.Fatalf("record %d: meta %v, want none", i, r.Meta)
		}
		if i%3 == 0 {
			kept = append(kept, r)
			continue
		}
		// scribble over it before giving it back: a later record read
		// into this memory must not show these bytes
		for j := range r.Entries {
			r.Entries[j] = 0xc1
		}
		r.Release()
		if r.Entries != nil || r.Meta != nil {
			t.Fatal("Release left Entries or Meta")
		}
	}
	for _, r := range kept {
		if !bytes.Equal(r.Entries, want[r.Offset]) {
			t.Fatalf("held record %d changed while later records were read", r.Offset)
		}
		r.Release()
	}
	// once more from the start, into the recycled memory
	c.Reset()
	if err := c.Commit(0); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	for i := 1; i < len(want); i++ {
		r := readN(t, c, 1)[0]
		if !bytes.Equal(r.Entries, want[r.Offset]) {
			t.Fatalf("record %d read again: contents differ", r.Offset)
		}
		r.Release()
	}
}

func TestRecClass(t *testing.T) {
	for _, tc := range []struct{ n, class int }{
		{0, 0}, {1, 0}, {1024, 0}, {1025, 1}, {2048, 1}, {256 << 10, 8}, {256<<10 + 1, 9}, {64 << 20, 16}, {64<<20 + 1, -1},
	} {
		if got := recClass(tc.n); got != tc.class {
			t.Errorf("recClass(%d) = %d, want %d", tc.n, got, tc.class)
		}
		buf, h := getRecBuf(tc.n)
		if len(buf) != tc.n || (h == nil) != (tc.class < 0) {
			t.Errorf("getRecBuf(%d): %d bytes, handle %v", tc.n, len(buf), h != nil)
		}
		putRecBuf(h)
	}
}
