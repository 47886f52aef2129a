//go:build linux

package broker

import (
	"os"

	"golang.org/x/sys/unix"
)

type osFile struct{ f *os.File }

// iovMax is the largest number of buffers one pwritev(2) takes (IOV_MAX).
const iovMax = 1024

func (f *osFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	fd := int(f.f.Fd())
	total := 0
	for len(bufs) > 0 {
		batch := bufs
		if len(batch) > iovMax {
			batch = batch[:iovMax]
		}
		n, err := unix.Pwritev(fd, batch, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, &os.PathError{Op: "pwritev", Path: f.f.Name(), Err: err}
		}
		total += n
		off += int64(n)
		// drop what was written; a short write continues where it stopped
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				continue
			}
			rest := bufs[0][n:]
			bufs = append([][]byte{rest}, bufs[1:]...)
			n = 0
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return total, nil
}

func (f *osFile) Datasync() error {
	for {
		err := unix.Fdatasync(int(f.f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.f.Name(), Err: err}
		}
		return nil
	}
}
