package forwardproto

import (
	"encoding/base64"
	"errors"
	"math"
	"testing"
)

func TestChunkID(t *testing.T) {
	id := ChunkID([6]byte{1, 2, 3, 4, 5, 6}, 0x0708, 0x090a0b0c0d0e0f10)
	if want := base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}); id != want || id != "AQIDBAUGBwgJCgsMDQ4PEA==" {
		t.Fatalf("id %q", id)
	}
	for _, c := range []struct {
		s [6]byte
		p uint16
		o uint64
	}{{}, {[6]byte{0xff, 0xfe, 0, 1, 2, 3}, math.MaxUint16, math.MaxUint64}, {[6]byte{'h', 'o', 's', 't', '0', '1'}, 7, 1 << 40}} {
		s, p, o, err := ParseChunkID(ChunkID(c.s, c.p, c.o))
		if err != nil || s != c.s || p != c.p || o != c.o {
			t.Fatalf("round trip %v: %v %v %v %v", c, s, p, o, err)
		}
	}
	for _, bad := range []string{"", "AQIDBAUGBwgJCgsMDQ4PEA", "AQIDBAUGBwgJCgsMDQ4PEA==\n", "AQIDBAUGBwgJCgsMDQ4P!A==", "AQIDBAUGBwgJCgsMDQ4PEB==", "AQIDBAUGBwgJCgsMDQ4PEBES"} {
		if _, _, _, err := ParseChunkID(bad); !errors.Is(err, ErrInvalidChunkID) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
