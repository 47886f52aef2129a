package forward

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// errMemoryLimit refuses a request that alone needs more than memory_limit.
var errMemoryLimit = errors.New("forward input: request needs more memory than memory_limit")

// budget is the memory all connections of one input share (memory_limit):
// the bytes their decoding buffers hold beyond what an idle connection
// keeps. A connection that needs more than is left waits: it stops reading,
// which is TCP backpressure.
//
// Requests are read in pieces, so a connection may hold part of what its
// request needs while it waits for the rest. Were every such connection to
// wait for the others, none would finish; so one of them at a time (the
// first to find the budget spent) may go past the limit to finish its
// request. Memory therefore stays under twice memory_limit in the worst case
// and under memory_limit whenever requests are read one piece at a time
// without contention; a request that alone needs more than memory_limit is
// refused.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	over  *account      // the account allowed past the limit
	freed chan struct{} // closed and replaced whenever memory is released
}

func newBudget(limit int64) *budget {
	return &budget{limit: limit, freed: make(chan struct{})}
}

// inUse is what the accounts hold.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// account is one connection's share: its decoder's buffers (dec) and the
// input's own (rec, the entries rewritten with source_address_key).
type account struct {
	b        *budget
	dec, rec int64
	ctx      context.Context // waiting ends with it
	waiting  func(bool)      // tells the connection it waits (for the janitor)
}

// Resize implements forwardproto.Memory for the decoder's buffers.
func (a *account) Resize(n int) error { return a.set(&a.dec, int64(n)) }

// set makes *slot n bytes, waiting for the budget when it grows.
func (a *account) set(slot *int64, n int64) error {
	b := a.b
	waited := false
	defer func() {
		if waited && a.waiting != nil {
			a.waiting(false)
		}
	}()
	for {
		b.mu.Lock()
		delta := n - *slot
		held := a.dec + a.rec
		switch {
		case delta <= 0:
			*slot = n
			b.used += delta
			if b.over == a && (held+delta == 0 || b.used <= b.limit) {
				b.over = nil
			}
			if delta < 0 {
				close(b.freed)
				b.freed = make(chan struct{})
			}
			b.mu.Unlock()
			return nil
		case held+delta > b.limit:
			b.mu.Unlock()
			return fmt.Errorf("%w (%d bytes, memory_limit %d)", errMemoryLimit, held+delta, b.limit)
		case b.used+delta <= b.limit || b.over == a || (b.over == nil && held > 0):
			if b.used+delta > b.limit {
				b.over = a
			}
			*slot = n
			b.used += delta
			b.mu.Unlock()
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		if !waited && a.waiting != nil {
			waited = true
			a.waiting(true)
		}
		select {
		case <-freed:
		case <-a.ctx.Done():
			return a.ctx.Err()
		}
	}
}

// release gives back everything the account holds.
func (a *account) release() {
	_ = a.set(&a.rec, 0)
	_ = a.set(&a.dec, 0)
}
