//go:build !linux

package broker

import "os"

type osFile struct{ f *os.File }

func (f *osFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	total := 0
	for _, b := range bufs {
		n, err := f.f.WriteAt(b, off)
		total += n
		off += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (f *osFile) Datasync() error { return f.f.Sync() }
