package broker

import (
	"errors"
	"os"
	"syscall"
)

// segFile is what the broker needs from a segment file. The os
// implementation is in file_linux.go / file_other.go; tests wrap it to
// inject faults (a full disk).
type segFile interface {
	ReadAt(p []byte, off int64) (int, error)
	// WriteVAt writes bufs back to back at off, all or an error; on error n
	// bytes may have been written.
	WriteVAt(bufs [][]byte, off int64) (n int, err error)
	Truncate(size int64) error
	// Datasync flushes the file's data (fdatasync on Linux).
	Datasync() error
	Size() (int64, error)
	Close() error
}

func openOSFile(path string, flag int) (segFile, error) {
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, err
	}
	return &osFile{f: f}, nil
}

func (f *osFile) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }
func (f *osFile) Truncate(size int64) error               { return f.f.Truncate(size) }
func (f *osFile) Close() error                            { return f.f.Close() }
func (f *osFile) Size() (int64, error) {
	st, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// syncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// isDiskFull reports whether err says the filesystem or the quota is full.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// isTransient reports whether err says the process, not the file, is in
// trouble (descriptors, memory, a full disk): Open fails and may be
// retried rather than set a good segment aside.
func isTransient(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.EAGAIN, syscall.EINTR, syscall.ENOSPC, syscall.EDQUOT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
