//go:build !unix

package tail

import (
	"hash/fnv"
	"os"
)

// fileKeyOf has no inode to read outside Unix: a hash of the base name
// stands in, which is weaker (a renamed file looks new).
func fileKeyOf(fi os.FileInfo) fileKey {
	h := fnv.New64a()
	h.Write([]byte(fi.Name()))
	return fileKey{ino: h.Sum64()}
}

func linksOf(os.FileInfo) uint64 { return 1 }
