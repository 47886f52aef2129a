package forwardproto

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// Chunk ids. The forward output names every chunk after where it sits in
// the sender's buffer, so that a chunk sent again (after a lost ack, a
// crash, a failover) carries the same id and a receiver that remembers the
// ids it stored acknowledges it without storing it twice. Two forms, both
// the standard, padded base64 of big-endian fields:
//
//	24 chars, 16 bytes: sender(6) | partition(2) | offset(8)             epoch 0
//	32 chars, 24 bytes: sender(6) | epoch(8) | partition(2) | offset(8)  epoch != 0
//
// The sender is the output's persistent random id; the epoch is the
// buffer's (incarnation << 32 | open count), which changes whenever the
// buffer may hand out an offset again (a recreated buffer, an unclean open
// that cut a lost tail off), so that an id never names two contents.
// Records written before buffers had epochs have epoch 0 and keep the
// 16-byte form, so a chunk resent after an upgrade still has the id it was
// first sent with. Receivers treat ids as opaque strings (fluentd, Fluent
// Bit and logship's forward input echo them and dedup on the whole string).

const (
	chunkIDLen      = 16 // bytes of an epoch-0 id
	epochChunkIDLen = 24 // bytes of an id with an epoch
)

// ChunkID returns the 16-byte-form id of a chunk of epoch 0: what
// EpochChunkID(sender, 0, partition, offset) returns.
func ChunkID(sender [6]byte, partition uint16, offset uint64) string {
	return EpochChunkID(sender, 0, partition, offset)
}

// EpochChunkID returns the id the forward output gives the chunk at
// (epoch, partition, offset) of the buffer of sender: base64 of 24 bytes,
// sender | epoch | partition | offset, or with epoch 0 the 16-byte form
// without the epoch (see "Chunk ids" above).
func EpochChunkID(sender [6]byte, epoch uint64, partition uint16, offset uint64) string {
	var b [epochChunkIDLen]byte
	p := copy(b[:], sender[:])
	if epoch != 0 {
		binary.BigEndian.PutUint64(b[p:], epoch)
		p += 8
	}
	binary.BigEndian.PutUint16(b[p:], partition)
	binary.BigEndian.PutUint64(b[p+2:], offset)
	return base64.StdEncoding.EncodeToString(b[:p+10])
}

// ParseChunkID is the inverse of EpochChunkID (and ChunkID): it accepts
// the base64 of 16 bytes (epoch 0) or of 24 bytes with a non-zero epoch,
// and fails with ErrInvalidChunkID for anything else.
func ParseChunkID(id string) (sender [6]byte, epoch uint64, partition uint16, offset uint64, err error) {
	var b [epochChunkIDLen + 2]byte
	want := 0
	switch len(id) {
	case base64.StdEncoding.EncodedLen(chunkIDLen):
		want = chunkIDLen
	case base64.StdEncoding.EncodedLen(epochChunkIDLen):
		want = epochChunkIDLen
	default:
		return sender, 0, 0, 0, fmt.Errorf("%w: %q is %d characters, want 24 or 32", ErrInvalidChunkID, id, len(id))
	}
	n, err := base64.StdEncoding.Strict().Decode(b[:], []byte(id))
	if err != nil || n != want {
		return sender, 0, 0, 0, fmt.Errorf("%w: %q: not the base64 of %d bytes", ErrInvalidChunkID, id, want)
	}
	p := copy(sender[:], b[:6])
	if want == epochChunkIDLen {
		epoch = binary.BigEndian.Uint64(b[p:])
		p += 8
		if epoch == 0 {
			return sender, 0, 0, 0, fmt.Errorf("%w: %q: epoch 0 in the 24-byte form", ErrInvalidChunkID, id)
		}
	}
	return sender, epoch, binary.BigEndian.Uint16(b[p:]), binary.BigEndian.Uint64(b[p+2:]), nil
}
