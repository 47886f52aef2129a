package forward

import "syscall"

const syscallEMFILE = syscall.EMFILE
