package main

import (
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

func errField(err error) zap.Field { return zap.Error(err) }

// bufferDir accepts the data_dir (the contract's -d) or the buffer folder
// inside it.
func bufferDir(dataDir string) string {
	b := filepath.Join(dataDir, "buffer")
	if st, err := os.Stat(b); err == nil && st.IsDir() {
		return b
	}
	return dataDir
}
