package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func appendMeta(t testing.TB, b *Broker, tag string, meta, entries []byte) Pos {
	t.Helper()
	type res struct {
		pos Pos
		err error
	}
	ch := make(chan res, 1)
	if err := b.AppendAsyncMeta(context.Background(), tag, meta, entries, 1, func(p Pos, err error) { ch <- res{p, err} }); err != nil {
		t.Fatalf("AppendAsyncMeta: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("AppendAsyncMeta ack: %v", r.err)
	}
	return r.pos
}

// TestRecordMetaRoundTrip: meta stored with a record comes back with it,
// byte for byte, beside untouched entries, through a cursor (small and
// large frames take different read paths), after a reopen, and from Scan;
// records without meta have none, and an empty meta is kept as empty.
func TestRecordMetaRoundTrip(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1))
	type want struct {
		meta, entries []byte
	}
	var wants []want
	for i := 0; i < 40; i++ {
		var meta []byte
		switch i % 4 {
		case 1:
			meta = []byte(fmt.Sprintf("pos-%d", i))
		case 2:
			meta = bytes.Repeat([]byte{byte(i)}, MaxMetaBytes)
		case 3:
			meta = []byte{}
		}
		n := 100
		if i%5 == 0 {
			n = 100 << 10 // read by the large-frame path
		}
		e := payload("m", i, n)
		if meta == nil {
			mustAppend(t, b, "m", e, 1)
		} else {
			appendMeta(t, b, "m", meta, e)
		}
		wants = append(wants, want{meta, e})
	}
	check := func(what string, rs []Record) {
		t.Helper()
		if len(rs) != len(wants) {
			t.Fatalf("%s: %d records, want %d", what, len(rs), len(wants))
		}
		for i, r := range rs {
			w := wants[i]
			if !bytes.Equal(r.Entries, w.entries) {
				t.Fatalf("%s: record %d: entries differ (%d bytes, want %d)", what, i, len(r.Entries), len(w.entries))
			}
			if (r.Meta == nil) != (w.meta == nil) || !bytes.Equal(r.Meta, w.meta) {
				t.Fatalf("%s: record %d: meta %q (nil %v), want %q (nil %v)", what, i, trim(r.Meta), r.Meta == nil, trim(w.meta), w.meta == nil)
			}
			if r.Tag != "m" || r.Count != 1 {
				t.Fatalf("%s: record %d: tag %q count %d", what, i, r.Tag, r.Count)
			}
		}
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	check("cursor", readN(t, c, len(wants)))
	var scanned []Record
	if err := b.Scan(context.Background(), 0, 0, func(r Record) error { scanned = append(scanned, r); return nil }); err != nil {
		t.Fatal(err)
	}
	check("scan", scanned)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := openT(t, dir, WithPartitions(1))
	c2, err := b2.Cursor("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	check("reopened", readN(t, c2, len(wants)))
	if m := readMetaT(t, dir); m.version != 3 {
		t.Fatalf("META version %d, want 3", m.version)
	}
}

func trim(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

// TestAppendMetaTooLarge: a meta over MaxMetaBytes is refused as
// ErrTooLarge and nothing is stored; meta counts toward the record size.
func TestAppendMetaTooLarge(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(1), WithSegmentBytes(64<<10))
	err := b.AppendAsyncMeta(context.Background(), "t", make([]byte, MaxMetaBytes+1), []byte("x"), 1, func(Pos, error) { t.Error("done called") })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
	fits := int(b.MaxChunkBytes()) - len("t")
	err = b.AppendAsyncMeta(context.Background(), "t", []byte("m"), make([]byte, fits), 1, func(Pos, error) { t.Error("done called") })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("entries that fit alone but not with the meta: err %v, want ErrTooLarge", err)
	}
	if got := b.NextOffset(0); got != 0 {
		t.Fatalf("NextOffset %d after refused appends, want 0", got)
	}
}

// TestScanBoundsAndNextOffset: Scan starts at from (clamped to the oldest
// retained record), stops at what was readable when it began (records
// appended during the scan are not returned, and it never blocks), returns
// fn's error; NextOffset is the offset the next append gets.
func TestScanBoundsAndNextOffset(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(2))
	tag := tagFor(1, 2, "s")
	if got := b.NextOffset(1); got != 0 {
		t.Fatalf("NextOffset of an empty partition %d", got)
	}
	for i := 0; i < 10; i++ {
		appendMeta(t, b, tag, []byte{byte(i)}, payload(tag, i, 50))
	}
	if got := b.NextOffset(1); got != 10 {
		t.Fatalf("NextOffset %d, want 10", got)
	}
	var offs []uint64
	err := b.Scan(context.Background(), 1, 4, func(r Record) error {
		offs = append(offs, r.Offset)
		if r.Partition != 1 || len(r.Meta) != 1 || uint64(r.Meta[0]) != r.Offset {
			t.Errorf("record %d: partition %d meta %v", r.Offset, r.Partition, r.Meta)
		}
		if r.Offset == 5 {
			appendMeta(t, b, tag, []byte{99}, []byte("late")) // after the scan began
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(offs) != "[4 5 6 7 8 9]" {
		t.Fatalf("scanned %v, want [4 5 6 7 8 9]", offs)
	}
	if err := b.Scan(context.Background(), 1, 11, func(Record) error { t.Error("fn called past the end"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Scan(context.Background(), 0, 0, func(Record) error { t.Error("fn called on an empty partition"); return nil }); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	n := 0
	if err := b.Scan(context.Background(), 1, 0, func(Record) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan returned %v after %d calls, want fn's error after 1", err, n)
	}
	if err := b.Scan(context.Background(), 5, 0, func(Record) error { return nil }); err == nil {
		t.Fatal("Scan of a partition out of range succeeded")
	}
}

// TestOlderBuildRefusesMetaBuffer: META says version 3 once records with
// meta may exist, so a logship that reads only version 2 (and would take
// flag-2 frames for corruption) refuses the buffer; a version 2 META is
// still opened by this one.
func TestOlderBuildRefusesMetaBuffer(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, dir, WithPartitions(1))
	appendMeta(t, b, "t", []byte("m"), []byte("e"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "logship-buffer 3\n") {
		t.Fatalf("META %q", data)
	}
	v2 := strings.Replace(string(data), "logship-buffer 3", "logship-buffer 2", 1)
	m, err := parseMeta([]byte(v2))
	if err != nil || m.version != 2 {
		t.Fatalf("version 2 META: %v %+v", err, m)
	}
	// A flag this code does not know is a corrupted frame.
	f := encodeFrameMeta(nil, 0, 1, "t", []byte("m"), []byte("e"), 1, 0)
	if h, ok := parseFrameHeader(f); !ok || h.flags != flagMeta {
		t.Fatalf("frame with meta: ok %v flags %d", ok, h.flags)
	}
	f[26] |= 4
	if _, ok := parseFrameHeader(f); ok {
		t.Fatal("unknown flag accepted")
	}
	lostMeta := encodeFrame(nil, 0, "", nil, 3, flagLost|flagMeta)
	if _, ok := parseFrameHeader(lostMeta); ok {
		t.Fatal("lost frame with the meta flag accepted")
	}
}
