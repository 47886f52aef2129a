package main

import (
	"os"
	"path/filepath"
	"runtime/pprof"

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

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
