package kafka

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

// senderIDFile is the file, under data_dir/output/NAME/, holding the sender
// id as 12 lowercase hex digits and a newline.
const senderIDFile = "sender-id"

// loadSenderID returns the output's sender id, making and persisting it the
// first time (write a temporary file, fsync, rename, fsync the folder). A
// file that does not hold an id is replaced, with a warning: events resent
// from then on get new event ids. Without a data_dir the id is random per process.
func loadSenderID(dataDir, name string, log *zap.Logger) ([6]byte, error) {
	var id [6]byte
	if dataDir == "" {
		_, err := rand.Read(id[:])
		return id, err
	}
	dir := filepath.Join(dataDir, "output", name)
	path := filepath.Join(dir, senderIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if n, derr := hex.Decode(id[:], bytes.TrimSpace(b)); derr == nil && n == len(id) && len(bytes.TrimSpace(b)) == 2*len(id) {
			return id, nil
		}
		log.Warn("sender id file is damaged; making a new id (events resent from now on get new event ids)", zap.String("path", path))
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
