package tail

import (
	"errors"
	"io"
	"os"
)

// fileKey identifies a file on this host while it exists: device and
// inode. An inode is reused once a deleted file is closed, so a key is
// only trusted together with a fingerprint of the file's first bytes.
type fileKey struct {
	dev, ino uint64
}

// fingerprintBytes is how many leading bytes identify a file's content. A
// file shorter than that is fingerprinted over what it has, and the
// fingerprint grows with it up to this size.
const fingerprintBytes = 256

// fingerprint is FNV-1a over a file's first n bytes.
type fingerprint struct {
	n   int
	sum uint64
}

func (fp fingerprint) full() bool { return fp.n >= fingerprintBytes }

// matches reports whether head starts with the content fp was taken over.
func (fp fingerprint) matches(head []byte) bool {
	return len(head) >= fp.n && fnv1a(head[:fp.n]) == fp.sum
}

func fnv1a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// readHead reads the first min(size, fingerprintBytes) bytes of f
// into scratch (of at least fingerprintBytes) and returns them.
func readHead(f *os.File, size int64, scratch []byte) ([]byte, error) {
	n := int(min(size, fingerprintBytes))
	got, err := f.ReadAt(scratch[:n], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return scratch[:got], nil
}

// tailBytes is how many bytes before a checkpoint's offset are hashed: on
// resume they must still be there, or the file was rewritten.
//
// Device and inode (the fileKey) and the head fingerprint stay part of
// the identity. Other inode times do not help here: a truncation and
// rewrite in place keeps the inode and its birth time, and ctime and mtime
// change with every append, so neither tells a rewrite from growth. Birth
// time would only tell a reused inode from the old file, and such a file
// also has to match the 256 bytes at the start and the 256 before the
// offset to be taken for it.
const tailBytes = 256

// tailSum is FNV-1a over the n bytes before an offset (n = min(offset,
// tailBytes)); n == 0 means not known (offset 0, or a checkpoint written
// before it existed).
type tailSum struct {
	n   int
	sum uint64
}

func tailSumOf(b []byte) tailSum {
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
	}
	if len(b) == 0 {
		return tailSum{}
	}
	return tailSum{len(b), fnv1a(b)}
}

// readTail hashes the bytes of f just before off.
func readTail(f *os.File, off int64) (tailSum, error) {
	n := min(off, tailBytes)
	if n <= 0 {
		return tailSum{}, nil
	}
	var b [tailBytes]byte
	got, err := f.ReadAt(b[:n], off-n)
	if int64(got) < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return tailSum{}, err
	}
	return tailSum{int(n), fnv1a(b[:n])}, nil
}

// tailMatches reports whether the bytes of f before off are still those
// ts was taken over. An unknown ts matches; a read error does not.
func tailMatches(f *os.File, off int64, ts tailSum) bool {
	if ts.n == 0 {
		return true
	}
	if int64(ts.n) > off {
		return false
	}
	var b [tailBytes]byte
	got, err := f.ReadAt(b[:ts.n], off-int64(ts.n))
	if got < ts.n && err != nil {
		return false
	}
	return fnv1a(b[:ts.n]) == ts.sum
}
