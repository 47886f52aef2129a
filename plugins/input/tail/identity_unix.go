//go:build unix

package tail

import (
	"os"
	"syscall"
)

// fileKeyOf is the file's device and inode number.
func fileKeyOf(fi os.FileInfo) fileKey {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}
	}
	return fileKey{dev: uint64(st.Dev), ino: uint64(st.Ino)} //nolint:unconvert // widths differ per OS
}

// linksOf is the file's link count: 0 once it has been deleted while open.
func linksOf(fi os.FileInfo) uint64 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 1
	}
	return uint64(st.Nlink) //nolint:unconvert // widths differ per OS
}
