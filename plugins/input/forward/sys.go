package forward

import (
	"errors"
	"syscall"
)

// temporaryAcceptError tells an accept error worth retrying (out of file
// descriptors or memory, a connection aborted before it was accepted) from
// one that ends the listener.
func temporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
