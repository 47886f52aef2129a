package broker

import (
	"hash/crc32"
	"testing"
)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

func TestCursorNameEscaping(t *testing.T) {
	for _, name := range []string{"forward.0", "kafka out", "a/b", ".hidden", "..", "ünï", "%41", "x%", "-_."} {
		esc := escapeCursorName(name)
		if esc == "." || esc == ".." || esc[0] == '.' {
			t.Errorf("%q escapes to %q", name, esc)
		}
		for _, c := range esc {
			if c == '/' || c == 0 {
				t.Errorf("%q escapes to %q", name, esc)
			}
		}
		if got, ok := unescapeCursorName(esc); !ok || got != name {
			t.Errorf("round trip of %q: %q %v", name, got, ok)
		}
	}
	if _, ok := unescapeCursorName("bad%4"); ok {
		t.Error("truncated escape accepted")
	}
}

func TestSegNames(t *testing.T) {
	if got := segName(4711); got != "00000000000000004711.seg" {
		t.Fatalf("segName = %q", got)
	}
	if b, ok := parseSegName(segName(1<<63 + 5)); !ok || b != 1<<63+5 {
		t.Fatalf("parse: %d %v", b, ok)
	}
	for _, bad := range []string{"4711.seg", "0000000000000000471x.seg", "00000000000000004711.cur"} {
		if _, ok := parseSegName(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	fr := encodeFrame(nil, 42, "app.web", []byte("entries"), 3, 0)
	h, ok := parseFrameHeader(fr)
	if !ok || h.offset != 42 || h.count != 3 || h.tagLen != 7 || h.length != 14 {
		t.Fatalf("header %+v %v", h, ok)
	}
	if frameCRC(fr, fr[frameHeaderSize:]) != h.crc {
		t.Fatal("crc mismatch")
	}
	var c [cursorFileSize]byte
	encodeCursor(c[:], 99, 1)
	if v, _, err := decodeCursor(c[:]); err != nil || v != 99 {
		t.Fatalf("cursor: %d %v", v, err)
	}
	c[9] ^= 1
	if _, _, err := decodeCursor(c[:]); err == nil {
		t.Fatal("corrupted cursor file accepted")
	}
}
