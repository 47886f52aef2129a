package forwardproto

import (
	"encoding/base64"
	"errors"
	"math"
	"testing"
)

func TestChunkID(t *testing.T) {
	// Epoch 0: the 16-byte id of releases before epochs, unchanged, so that
	// a chunk resent after an upgrade keeps its id.
	id := ChunkID([6]byte{1, 2, 3, 4, 5, 6}, 0x0708, 0x090a0b0c0d0e0f10)
	if want := base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}); id != want || id != "AQIDBAUGBwgJCgsMDQ4PEA==" {
		t.Fatalf("id %q", id)
	}
	if e := EpochChunkID([6]byte{1, 2, 3, 4, 5, 6}, 0, 0x0708, 0x090a0b0c0d0e0f10); e != id {
		t.Fatalf("epoch 0: %q, want %q", e, id)
	}
	// With an epoch: sender | epoch | partition | offset, 24 bytes.
	id = EpochChunkID([6]byte{1, 2, 3, 4, 5, 6}, 0x1112131415161718, 0x0708, 0x090a0b0c0d0e0f10)
	want := base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4, 5, 6, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	if id != want || len(id) != 32 {
		t.Fatalf("id %q, want %q", id, want)
	}
	for _, c := range []struct {
		s [6]byte
		e uint64
		p uint16
		o uint64
	}{
		{}, {[6]byte{0xff, 0xfe, 0, 1, 2, 3}, 0, math.MaxUint16, math.MaxUint64}, {[6]byte{'h', 'o', 's', 't', '0', '1'}, 0, 7, 1 << 40},
		{e: 1}, {[6]byte{9}, 0xdeadbeef<<32 | 3, 2, 17}, {[6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, math.MaxUint64, math.MaxUint16, math.MaxUint64},
	} {
		id := EpochChunkID(c.s, c.e, c.p, c.o)
		s, e, p, o, err := ParseChunkID(id)
		if err != nil || s != c.s || e != c.e || p != c.p || o != c.o {
			t.Fatalf("round trip %v (%q): %v %v %v %v %v", c, id, s, e, p, o, err)
		}
	}
	for _, bad := range []string{
		"", "AQIDBAUGBwgJCgsMDQ4PEA", "AQIDBAUGBwgJCgsMDQ4PEA==\n", "AQIDBAUGBwgJCgsMDQ4P!A==", "AQIDBAUGBwgJCgsMDQ4PEB==", "AQIDBAUGBwgJCgsMDQ4PEBES",
		base64.StdEncoding.EncodeToString(make([]byte, 24)),            // epoch 0 must use the short form
		base64.StdEncoding.EncodeToString(make([]byte, 20)),            // neither length
		base64.StdEncoding.EncodeToString(make([]byte, 24))[:31] + "!", // not base64
		base64.StdEncoding.EncodeToString(make([]byte, 22)),            // 32 characters, 22 bytes
		base64.StdEncoding.EncodeToString(make([]byte, 24)) + "A",      // 33 characters
	} {
		if _, _, _, _, err := ParseChunkID(bad); !errors.Is(err, ErrInvalidChunkID) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestChunkIDNeverReused: the same (sender, partition, offset) in two
// epochs gives two ids, and no epoch's id equals an epoch-0 id.
func TestChunkIDNeverReused(t *testing.T) {
	s := [6]byte{1, 2, 3, 4, 5, 6}
	seen := map[string]bool{}
	for _, e := range []uint64{0, 1, 2, 1 << 32, 1<<32 | 1, 0xabcdef01 << 32} {
		for p := range uint16(3) {
			for o := range uint64(50) {
				id := EpochChunkID(s, e, p, o)
				if seen[id] {
					t.Fatalf("id %q (epoch %d, partition %d, offset %d) made twice", id, e, p, o)
				}
				seen[id] = true
			}
		}
	}
}
