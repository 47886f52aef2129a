package forward

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
)

// idHash is what dedup remembers of a chunk id: its 128-bit SipHash-2-4
// under the journal's key (hashKey), never the id itself. Two different ids
// share a hash with probability 2^-128: with n ids remembered, a new id is
// taken for one of them (acknowledged without being stored) with
// probability at most n/2^128, 2.9e-33 for a full default window of 10^6
// ids; over 2000 chunks/s for ten years (6.3e11 chunks) it is below 2e-21.
// The key is random per journal (kept in its header), so nobody can choose
// ids that collide without knowing it.
type idHash [2]uint64

// hashKey is a SipHash key.
type hashKey [2]uint64

func newHashKey() hashKey {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hashKey{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
}

// sipRound is one SipRound of SipHash.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// hash is SipHash-2-4 with a 128-bit output (Aumasson and Bernstein's
// reference, vectors_sip128) of p under k; [0] holds the first 8 bytes of
// the output, read little-endian.
func (k hashKey) hash(p []byte) idHash {
	v0 := k[0] ^ 0x736f6d6570736575
	v1 := k[1] ^ 0x646f72616e646f6d ^ 0xee
	v2 := k[0] ^ 0x6c7967656e657261
	v3 := k[1] ^ 0x7465646279746573
	b := uint64(len(p)) << 56
	for ; len(p) >= 8; p = p[8:] {
		m := binary.LittleEndian.Uint64(p)
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
	}
	for i := len(p) - 1; i >= 0; i-- {
		b |= uint64(p[i]) << (8 * i)
	}
	v3 ^= b
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= b
	v2 ^= 0xee
	for range 4 {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	h0 := v0 ^ v1 ^ v2 ^ v3
	v1 ^= 0xdd
	for range 4 {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	return idHash{h0, v0 ^ v1 ^ v2 ^ v3}
}
