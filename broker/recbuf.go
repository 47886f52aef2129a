package broker

import (
	"math/bits"
	"sync"
)

// The memory records are read into comes from pools, one per power-of-two
// size, and goes back to them when the reader releases the record
// (Record.Release): an output that ships a record of hundreds of KiB per
// chunk then reads the next one into the same memory, instead of leaving a
// fresh allocation per record to the garbage collector. A record that is
// never released is collected as any other memory.
const (
	minRecShift = 10 // 1 KiB
	maxRecShift = 26 // 64 MiB; larger records are allocated
)

var recPools [maxRecShift - minRecShift + 1]sync.Pool // of *[]byte, len == cap == the class size

// recClass returns the pool for n bytes (the smallest class that holds n),
// or -1 when n is beyond the largest.
func recClass(n int) int {
	if n > 1<<maxRecShift {
		return -1
	}
	if n <= 1<<minRecShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minRecShift
}

// getRecBuf returns a buffer of n bytes (not zeroed) and the handle that
// gives it back (nil when n is beyond the pools).
func getRecBuf(n int) ([]byte, *[]byte) {
	c := recClass(n)
	if c < 0 {
		return make([]byte, n), nil
	}
	if p, ok := recPools[c].Get().(*[]byte); ok {
		return (*p)[:n], p
	}
	b := make([]byte, 1<<(c+minRecShift))
	return b[:n], &b
}

// putRecBuf gives a buffer of getRecBuf back; nil is ignored.
func putRecBuf(p *[]byte) {
	if p == nil {
		return
	}
	if c := recClass(cap(*p)); c >= 0 && cap(*p) == 1<<(c+minRecShift) {
		*p = (*p)[:cap(*p)]
		recPools[c].Put(p)
	}
}

// GetBuffer returns at least n bytes of the broker's pooled memory (len ==
// cap: the power of two from 1 KiB that holds n, or n beyond 64 MiB), not
// zeroed: the memory records are read into, and that an appender may read
// its chunks into and hand over with them (AppendAsyncOwned). PutBuffer
// gives it back.
func GetBuffer(n int) *[]byte {
	_, h := getRecBuf(n)
	if h == nil {
		b := make([]byte, n)
		return &b
	}
	*h = (*h)[:cap(*h)]
	return h
}

// PutBuffer gives memory of GetBuffer back to the pool; nil is ignored.
// Nothing may use it afterwards.
func PutBuffer(b *[]byte) { putRecBuf(b) }

// Held returns the bytes of memory r keeps until Release: those of the
// pooled buffer its Entries and Meta were read into, which can be about
// twice their length (a buffer is reused for later, shorter records).
func (r *Record) Held() int {
	n := len(r.Entries) + len(r.Meta)
	if r.buf != nil {
		n = max(n, cap(*r.buf))
	}
	return n
}

// Release gives the memory of r's Entries and Meta back to the broker, to
// read later records into: neither may be used afterwards, by anyone.
// Calling it is optional (unreleased records are garbage collected); call it
// at most once, on one copy of the Record.
func (r *Record) Release() {
	putRecBuf(r.buf)
	r.buf, r.Entries, r.Meta = nil, nil, nil
}
