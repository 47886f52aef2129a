// Package senderid keeps an output's sender id: 6 random bytes made once
// and persisted under data_dir/output/NAME/sender-id, so that what the
// output sends again after a restart carries the ids it was first sent
// with (the forward output's chunk ids, the kafka output's event ids and
// transactional ids).
package senderid

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/atomicfile"
)

// File is the file, under data_dir/output/NAME/, holding the sender id as
// 12 lowercase hex digits and a newline.
const File = "sender-id"

// Load returns the output's sender id, making and persisting it the first
// time (write a temporary file, fsync, rename, fsync the folder). A file
// that does not hold an id is replaced, with a warning that says what that
// costs (consequence: what is resent from then on gets new ids). Without a
// data_dir the id is random per process.
func Load(dataDir, name string, log *zap.Logger, consequence string) ([6]byte, error) {
	var id [6]byte
	if dataDir == "" {
		_, err := rand.Read(id[:])
		return id, err
	}
	dir := filepath.Join(dataDir, "output", name)
	path := filepath.Join(dir, File)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if n, derr := hex.Decode(id[:], bytes.TrimSpace(b)); derr == nil && n == len(id) && len(bytes.TrimSpace(b)) == 2*len(id) {
			return id, nil
		}
		log.Warn("sender id file is damaged; making a new id ("+consequence+")", zap.String("path", path))
	case !errors.Is(err, fs.ErrNotExist):
		return id, err
	}
	if _, err := rand.Read(id[:]); err != nil {
		return id, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return id, err
	}
	return id, atomicfile.Write(path, []byte(hex.EncodeToString(id[:])+"\n"), 0o644)
}
