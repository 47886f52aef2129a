package forwardproto

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// ChunkID returns the id the forward output gives a chunk: the standard,
// padded base64 of 16 bytes, sender | partition (big-endian) | offset
// (big-endian). A chunk resent after a crash gets the same id, which is how
// a receiver keeps duplicates out.
func ChunkID(sender [6]byte, partition uint16, offset uint64) string {
	var b [16]byte
	copy(b[:6], sender[:])
	binary.BigEndian.PutUint16(b[6:], partition)
	binary.BigEndian.PutUint64(b[8:], offset)
	return base64.StdEncoding.EncodeToString(b[:])
}

// ParseChunkID is the inverse of ChunkID. It fails with ErrInvalidChunkID
// for anything but the base64 of 16 bytes.
func ParseChunkID(id string) (sender [6]byte, partition uint16, offset uint64, err error) {
	var b [18]byte
	if len(id) != base64.StdEncoding.EncodedLen(16) {
		return sender, 0, 0, fmt.Errorf("%w: %q is %d characters, want 24", ErrInvalidChunkID, id, len(id))
	}
	n, err := base64.StdEncoding.Strict().Decode(b[:], []byte(id))
	if err != nil || n != 16 {
		return sender, 0, 0, fmt.Errorf("%w: %q: not the base64 of 16 bytes", ErrInvalidChunkID, id)
	}
	copy(sender[:], b[:6])
	return sender, binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint64(b[8:]), nil
}
