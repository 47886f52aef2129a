package main

import (
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"time"

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

// startMemProfile writes a heap profile to path whenever the live heap
// (what the last GC kept) is the largest seen so far, checked every 250ms,
// so that the file holds the allocations at the peak. stop ends it.
func startMemProfile(path string) (stop func()) {
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
			}
			metrics.Read(s)
			if live := s[0].Value.Uint64(); live > peak {
				peak = live
				writeHeapProfile(path)
			}
		}
	}()
	return func() { close(quit); <-done }
}

func writeHeapProfile(path string) {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return
	}
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil && cerr == nil {
		_ = os.Rename(tmp, path)
	}
}
