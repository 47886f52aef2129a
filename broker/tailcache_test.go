package broker

import (
	"bytes"
	"testing"
)

func tailState(b *Broker, part int) (records int, bytes int64) {
	p := b.parts[part]
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tail), p.tailBytes
}

// appendMixed appends n records of varied sizes, every third with meta,
// all but every fifth in memory handed over to the broker (as the forward
// input does, the entries in the middle of the buffer, as a request's are
// in its frame), and returns their entries, and where those handed over
// lay.
func appendMixed(t *testing.T, b *Broker, n int) (want, handed [][]byte) {
	t.Helper()
	sizes := []int{10, 3000, 70 << 10, 200 << 10, 5 << 10, 300 << 10, 100}
	for i := range n {
		e := payload("t", i, sizes[i%len(sizes)])
		want = append(want, e)
		var meta []byte
		if i%3 == 0 {
			meta = []byte{byte(i)}
		}
		var own *[]byte
		entries := e
		if i%5 != 4 {
			own = GetBuffer(len(e) + 40)
			entries = (*own)[17 : 17+len(e)]
			copy(entries, e)
		}
		done := make(chan error, 1)
		if err := b.AppendAsyncOwned(t.Context(), "t", meta, entries, 1, own, func(_ Pos, err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
		if own != nil {
			handed = append(handed, entries)
		} else {
			handed = append(handed, nil)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	return want, handed
}

func checkRecords(t *testing.T, who string, rs []Record, want [][]byte) {
	t.Helper()
	for i, r := range rs {
		if r.Offset != uint64(i) || r.Tag != "t" || r.Count != 1 || !bytes.Equal(r.Entries, want[i]) {
			t.Fatalf("%s: record %d: offset %d tag %q count %d, %d bytes (want %d), equal %v",
				who, i, r.Offset, r.Tag, r.Count, len(r.Entries), len(want[i]), bytes.Equal(r.Entries, want[i]))
		}
		if i%3 == 0 && (len(r.Meta) != 1 || r.Meta[0] != byte(i)) || i%3 != 0 && r.Meta != nil {
			t.Fatalf("%s: record %d: meta %v", who, i, r.Meta)
		}
	}
}

// TestTailCacheReadersBehindWriter: cursors open while records are
// appended read those whose memory was handed over from memory, each its
// own bytes: the first of two gets copies, the last the memory itself; the
// others from the segments; nothing stays cached once both read
// everything.
func TestTailCacheReadersBehindWriter(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			b := openT(t, t.TempDir(), WithPartitions(1), WithSync(mode), WithSegmentBytes(1<<20))
			ca, err := b.Cursor("a", 0)
			if err != nil {
				t.Fatal(err)
			}
			cb, err := b.Cursor("b", 0)
			if err != nil {
				t.Fatal(err)
			}
			const n = 30 // over several segments
			want, handed := appendMixed(t, b, n)
			ra := readN(t, ca, n)
			checkRecords(t, "a", ra, want)
			for _, r := range ra { // a's copies are a's own
				for j := range r.Entries {
					r.Entries[j] = 0xc1
				}
			}
			rb := readN(t, cb, n)
			checkRecords(t, "b", rb, want)
			for i, r := range rb { // the last reader got the memory itself
				if h := handed[i]; h != nil && &r.Entries[0] != &h[0] {
					t.Fatalf("record %d: b's entries were copied", i)
				}
				if h := handed[i]; h != nil && &ra[i].Entries[0] == &h[0] {
					t.Fatalf("record %d: a got the memory b read later", i)
				}
			}
			if hits, owned := b.m.tailHits.Load(), uint64(n-n/5); hits != 2*owned {
				t.Fatalf("%d reads from the tail cache, want %d", hits, 2*owned)
			}
			if recs, by := tailState(b, 0); recs != 0 || by != 0 {
				t.Fatalf("%d records (%d bytes) still cached after every cursor read them", recs, by)
			}
			for _, r := range rb {
				r.Release()
			}
			// read again from the segments
			ca.Reset()
			if err := ca.Commit(0); err != nil {
				t.Fatal(err)
			}
			ca.Reset()
			again := readN(t, ca, n-1)
			checkRecords(t, "a again", append([]Record{{Offset: 0, Tag: "t", Count: 1, Entries: want[0], Meta: []byte{0}}}, again...), want)
		})
	}
}

// TestTailCacheBounded: a cursor that does not read keeps at most the
// cache's size in memory; it then reads the rest from the segments, in
// order. Without an open cursor nothing is cached, nor with the cache off.
func TestTailCacheBounded(t *testing.T) {
	const limit = 512 << 10
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncAlways), WithTailCache(limit))
	_, _ = appendMixed(t, b, 5)
	if recs, _ := tailState(b, 0); recs != 0 {
		t.Fatalf("%d records cached with no cursor open", recs)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	readN(t, c, 5)
	want, _ := appendMixed(t, b, 40)
	recs, by := tailState(b, 0)
	if by > limit || recs == 0 {
		t.Fatalf("%d records (%d bytes) cached, limit %d", recs, by, limit)
	}
	rs := readN(t, c, 40)
	for i, r := range rs {
		if r.Offset != uint64(5+i) || !bytes.Equal(r.Entries, want[i]) {
			t.Fatalf("record %d: offset %d, contents equal %v", 5+i, r.Offset, bytes.Equal(r.Entries, want[i]))
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, _ = appendMixed(t, b, 2)
	if recs, by := tailState(b, 0); recs != 0 || by != 0 {
		t.Fatalf("%d records (%d bytes) cached after the only cursor closed", recs, by)
	}

	off := openT(t, t.TempDir(), WithPartitions(1), WithTailCache(0))
	c, err = off.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = appendMixed(t, off, 7)
	checkRecords(t, "cache off", readN(t, c, 7), want)
	if hits := off.m.tailHits.Load(); hits != 0 {
		t.Fatalf("%d tail reads with the cache off", hits)
	}
}

// TestTailCacheSharedByPartitions: WithTailCache bounds the whole buffer:
// with 8 partitions each holds at most an eighth of it, so memory does not
// grow with the partition count, nor with a cursor that stops reading.
func TestTailCacheSharedByPartitions(t *testing.T) {
	const total = 4 << 20
	b := openT(t, t.TempDir(), WithPartitions(8), WithSync(SyncAlways), WithTailCache(total))
	part := partitionFor("t", 8)
	c, err := b.Cursor("out", part)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := appendMixed(t, b, 40) // about 4.7 MB, none read yet
	recs, by := tailState(b, part)
	if by > total/8 || recs == 0 {
		t.Fatalf("%d records (%d bytes) cached in one partition of 8, want some and at most %d", recs, by, total/8)
	}
	checkRecords(t, "shared cache", readN(t, c, 40), want)
}
