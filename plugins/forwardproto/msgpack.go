package forwardproto

import "github.com/logship/logship/internal/mpack"

// reserve5 appends a 5-byte placeholder for a header written later by
// patchHeader, and returns its offset.
func reserve5(dst []byte) ([]byte, int) {
	return append(dst, 0, 0, 0, 0, 0), len(dst)
}

// Header families for patchHeader.
const (
	famArray = iota
	famMap
	famBin
)

// patchHeader writes, at the placeholder at, the smallest header of family
// fam for n (elements, pairs or bytes) and closes the gap behind it.
func patchHeader(dst []byte, at int, fam int, n int) []byte {
	var h [5]byte
	var hl int
	switch fam {
	case famArray:
		hl = len(mpack.AppendArrayHeader(h[:0], n))
	case famMap:
		hl = len(mpack.AppendMapHeader(h[:0], n))
	default:
		hl = len(mpack.AppendBinHeader(h[:0], n))
	}
	copy(dst[at:], h[:hl])
	if hl < 5 {
		copy(dst[at+hl:], dst[at+5:])
		dst = dst[:len(dst)-(5-hl)]
	}
	return dst
}

func isMapByte(c byte) bool   { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }
func isArrayByte(c byte) bool { return c&0xf0 == 0x90 || c == 0xdc || c == 0xdd }
func isStrOrBin(c byte) bool {
	return c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb) || (c >= 0xc4 && c <= 0xc6)
}
