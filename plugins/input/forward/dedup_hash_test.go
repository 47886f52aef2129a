package forward

import (
	"encoding/binary"
	"encoding/hex"
	"testing"
)

// TestSipHash128Vectors: hashKey.hash is SipHash-2-4-128, checked against
// the reference implementation's vectors (key 00..0f, message 00..len-1).
func TestSipHash128Vectors(t *testing.T) {
	want := map[int]string{
		0:  "a3817f04ba25a8e66df67214c7550293",
		1:  "da87c1d86b99af44347659119b22fc45",
		7:  "a1f1ebbed8dbc153c0b84aa61ff08239",
		8:  "3b62a9ba6258f5610f83e264f31497b4",
		15: "5493e99933b0a8117e08ec0f97cfc3d9",
		32: "7c3956ca5eeafc3e363e9d556546eb68",
		63: "5150d1772f50834a503e069a973fbd7c",
	}
	k := hashKey{0x0706050403020100, 0x0f0e0d0c0b0a0908}
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	for n, w := range want {
		h := k.hash(msg[:n])
		var out [16]byte
		binary.LittleEndian.PutUint64(out[:8], h[0])
		binary.LittleEndian.PutUint64(out[8:], h[1])
		if got := hex.EncodeToString(out[:]); got != w {
			t.Errorf("%d bytes: %s, want %s", n, got, w)
		}
	}
}

func BenchmarkIDHash(b *testing.B) {
	k := newHashKey()
	id := []byte("AAECAwQFBgAAAAcAAwAAAAAAAAAq") // an EpochChunkID
	b.SetBytes(int64(len(id)))
	for range b.N {
		_ = k.hash(id)
	}
}
