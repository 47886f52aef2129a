package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// On-disk format constants; see doc.go.
const (
	segHeaderSize   = 32
	frameHeaderSize = 32
	// segVersion is the version of the segments this code creates: 2,
	// whose frames carry their epoch at byte 28. Version 1 segments
	// (written before epochs, the u32 at 28 is 0) are read as epoch 0.
	segVersion    = 2
	segVersionMin = 1
	// cursorVersion is the cursor file version (unchanged by epochs).
	cursorVersion = 1
	// metaVersion is the version in META; a logship that reads only
	// version 1 refuses a version 2 buffer instead of taking its frames
	// with a non-zero epoch for corrupted ones.
	metaVersion = 3
	frameMagic  = 0x52534CF7
	flagLost    = 1
	// flagMeta: the payload is tag | u16 meta length | meta | entries
	// (written since META version 3; see doc.go).
	flagMeta = 2
	// MaxMetaBytes is the largest meta a record carries.
	MaxMetaBytes = 4096

	segSuffix   = ".seg"
	spareSuffix = ".spare"
	// segFlagReused (segment header flags): the file was a consumed
	// segment before; past the end of its records it holds bytes of that
	// earlier use (see "Segment reuse" in doc.go).
	segFlagReused = 1
	curSuffix     = ".cur"
	tmpSuffix     = ".tmp"
	cursorsDir    = "cursors"
	metaFile      = "META"
	lockFile      = "LOCK"

	cursorFileSize = 32
	maxTagLen      = 1<<16 - 1

	minSegmentBytes = 1024
	// indexEvery is the distance in bytes between two sparse index entries.
	indexEvery = 1 << 20
)

var (
	segMagic = [8]byte{'L', 'S', 'H', 'P', 'S', 'E', 'G', 0}
	curMagic = [4]byte{'L', 'S', 'C', 'R'}
	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

// segHeader is the decoded 32-byte segment header.
type segHeader struct {
	version   uint16
	flags     uint16
	partition uint32
	base      uint64
}

func putSegHeader(b []byte, partition int, base uint64) {
	putSegHeaderFlags(b, partition, base, 0)
}

func putSegHeaderFlags(b []byte, partition int, base uint64, flags uint16) {
	_ = b[segHeaderSize-1]
	copy(b[0:8], segMagic[:])
	binary.LittleEndian.PutUint16(b[8:], segVersion)
	binary.LittleEndian.PutUint16(b[10:], flags)
	binary.LittleEndian.PutUint32(b[12:], uint32(partition))
	binary.LittleEndian.PutUint64(b[16:], base)
	binary.LittleEndian.PutUint32(b[24:], 0)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[0:28], crcTable))
}

var errBadSegHeader = errors.New("bad segment header")

// parseSegHeader decodes a header. It returns errBadSegHeader when the magic
// or the CRC does not match, and an errUnknownVersion error when the header
// is intact but of a version this code does not read.
func parseSegHeader(b []byte) (segHeader, error) {
	if len(b) < segHeaderSize || string(b[0:8]) != string(segMagic[:]) ||
		binary.LittleEndian.Uint32(b[28:]) != crc32.Checksum(b[0:28], crcTable) {
		return segHeader{}, errBadSegHeader
	}
	h := segHeader{
		version:   binary.LittleEndian.Uint16(b[8:]),
		flags:     binary.LittleEndian.Uint16(b[10:]),
		partition: binary.LittleEndian.Uint32(b[12:]),
		base:      binary.LittleEndian.Uint64(b[16:]),
	}
	if h.version < segVersionMin || h.version > segVersion {
		return h, fmt.Errorf("%w: segment format version %d (this logship reads %d to %d)", errUnknownVersion, h.version, segVersionMin, segVersion)
	}
	return h, nil
}

var errUnknownVersion = errors.New("unknown format version")

// frameHeader is a decoded frame header.
type frameHeader struct {
	crc    uint32
	length uint32 // tag + entries
	count  uint32
	offset uint64
	tagLen uint16
	flags  uint16
	epoch  uint32 // the epoch the frame was written in; 0 in version 1 segments
}

func (h frameHeader) size() int64 { return frameHeaderSize + int64(h.length) }

// splitPayload cuts a frame's payload (tag and what follows) into meta (nil
// without flagMeta) and entries; ok is false when the meta section does not
// fit the payload.
func (h frameHeader) splitPayload(rest []byte) (meta, entries []byte, ok bool) {
	if h.flags&flagMeta == 0 {
		return nil, rest, true
	}
	if len(rest) < 2 {
		return nil, nil, false
	}
	n := int(binary.LittleEndian.Uint16(rest))
	if n > MaxMetaBytes || len(rest) < 2+n {
		return nil, nil, false
	}
	return rest[2 : 2+n : 2+n], rest[2+n:], true
}

// putFrameHeader encodes h (without CRC) into b[0:32].
func putFrameHeader(b []byte, length, count uint32, offset uint64, tagLen, flags uint16, epoch uint32) {
	_ = b[frameHeaderSize-1]
	binary.LittleEndian.PutUint32(b[0:], frameMagic)
	binary.LittleEndian.PutUint32(b[4:], 0)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint32(b[12:], count)
	binary.LittleEndian.PutUint64(b[16:], offset)
	binary.LittleEndian.PutUint16(b[24:], tagLen)
	binary.LittleEndian.PutUint16(b[26:], flags)
	binary.LittleEndian.PutUint32(b[28:], epoch)
}

func parseFrameHeader(b []byte) (frameHeader, bool) {
	_ = b[frameHeaderSize-1]
	if binary.LittleEndian.Uint32(b[0:]) != frameMagic {
		return frameHeader{}, false
	}
	h := frameHeader{
		crc:    binary.LittleEndian.Uint32(b[4:]),
		length: binary.LittleEndian.Uint32(b[8:]),
		count:  binary.LittleEndian.Uint32(b[12:]),
		offset: binary.LittleEndian.Uint64(b[16:]),
		tagLen: binary.LittleEndian.Uint16(b[24:]),
		flags:  binary.LittleEndian.Uint16(b[26:]),
		epoch:  binary.LittleEndian.Uint32(b[28:]),
	}
	if uint32(h.tagLen) > h.length {
		return frameHeader{}, false
	}
	if h.flags&^(flagLost|flagMeta) != 0 || (h.flags&flagLost != 0 && h.flags != flagLost) || (h.flags&flagLost != 0 && h.length != 0) {
		return frameHeader{}, false
	}
	if h.flags&flagMeta != 0 && h.length < uint32(h.tagLen)+2 {
		return frameHeader{}, false
	}
	return h, true
}

// frameCRC computes the CRC of a frame from its header bytes and payload
// parts (any of which may be empty).
func frameCRC(hdr []byte, parts ...[]byte) uint32 {
	c := crc32.Update(0, crcTable, hdr[8:frameHeaderSize])
	for _, p := range parts {
		c = crc32.Update(c, crcTable, p)
	}
	return c
}

func setFrameCRC(hdr []byte, crc uint32) { binary.LittleEndian.PutUint32(hdr[4:], crc) }

// encodeFrame appends a complete frame of epoch 0 to dst (tests and
// repair; the append path builds headers in place).
func encodeFrame(dst []byte, offset uint64, tag string, entries []byte, count uint32, flags uint16) []byte {
	return encodeFrameEpoch(dst, offset, 0, tag, entries, count, flags)
}

func encodeFrameEpoch(dst []byte, offset uint64, epoch uint32, tag string, entries []byte, count uint32, flags uint16) []byte {
	return encodeFrameMeta(dst, offset, epoch, tag, nil, entries, count, flags)
}

// encodeFrameMeta is encodeFrameEpoch with a meta section (flagMeta) when
// meta is not nil.
func encodeFrameMeta(dst []byte, offset uint64, epoch uint32, tag string, meta, entries []byte, count uint32, flags uint16) []byte {
	start := len(dst)
	var hdr [frameHeaderSize]byte
	length := len(tag) + len(entries)
	if meta != nil {
		flags |= flagMeta
		length += 2 + len(meta)
	}
	putFrameHeader(hdr[:], uint32(length), count, offset, uint16(len(tag)), flags, epoch)
	dst = append(dst, hdr[:]...)
	dst = append(dst, tag...)
	if meta != nil {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(meta)))
		dst = append(dst, meta...)
	}
	dst = append(dst, entries...)
	setFrameCRC(dst[start:], frameCRC(dst[start:start+frameHeaderSize], dst[start+frameHeaderSize:]))
	return dst
}

// segName returns the file name of the segment whose base offset is base.
func segName(base uint64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

// parseSegName returns the base offset of a segment file name.
func parseSegName(name string) (uint64, bool) { return parseNumbered(name, segSuffix) }

// parseNumbered parses the 20-digit offset of a file named by it and
// suffix.
func parseNumbered(name, suffix string) (uint64, bool) {
	if len(name) != 20+len(suffix) || !strings.HasSuffix(name, suffix) {
		return 0, false
	}
	v, err := strconv.ParseUint(name[:20], 10, 64)
	return v, err == nil
}

// spareName names a consumed segment file kept for reuse by the offset
// after its last record: every record it still holds is below that.
func spareName(next uint64) string { return fmt.Sprintf("%020d%s", next, spareSuffix) }

func parseSpareName(name string) (uint64, bool) { return parseNumbered(name, spareSuffix) }

func partDirName(p int) string { return fmt.Sprintf("p%04d", p) }

func parsePartDirName(name string) (int, bool) {
	if len(name) != 5 || name[0] != 'p' {
		return 0, false
	}
	v, err := strconv.Atoi(name[1:])
	return v, err == nil && v >= 0
}

// escapeCursorName makes a cursor name safe as a file name.
func escapeCursorName(name string) string {
	var sb strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if c == '.' && i == 0 {
			ok = false
		}
		if ok {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

func unescapeCursorName(s string) (string, bool) {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			sb.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		sb.WriteByte(byte(v))
		i += 2
	}
	return sb.String(), true
}

// Cursor file: magic "LSCR" | version u16 | reserved u16 | committed u64 |
// unix nanos u64 | reserved u32 | CRC32C of [0,28).
func encodeCursor(b []byte, committed uint64, unixNano int64) {
	_ = b[cursorFileSize-1]
	copy(b[0:4], curMagic[:])
	binary.LittleEndian.PutUint16(b[4:], cursorVersion)
	binary.LittleEndian.PutUint16(b[6:], 0)
	binary.LittleEndian.PutUint64(b[8:], committed)
	binary.LittleEndian.PutUint64(b[16:], uint64(unixNano))
	binary.LittleEndian.PutUint32(b[24:], 0)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[0:28], crcTable))
}

func decodeCursor(b []byte) (committed uint64, unixNano int64, err error) {
	if len(b) != cursorFileSize || string(b[0:4]) != string(curMagic[:]) ||
		binary.LittleEndian.Uint32(b[28:]) != crc32.Checksum(b[0:28], crcTable) {
		return 0, 0, errors.New("bad cursor file")
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != cursorVersion {
		return 0, 0, fmt.Errorf("cursor file version %d", v)
	}
	return binary.LittleEndian.Uint64(b[8:]), int64(binary.LittleEndian.Uint64(b[16:])), nil
}
