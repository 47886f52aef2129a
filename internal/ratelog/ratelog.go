// Package ratelog logs a repeated condition once per interval per key, with
// the number of occurrences it held back: one bad frame is a counter
// increment and, at most every interval, a log line.
package ratelog

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Logger is safe for concurrent use.
type Logger struct {
	log   *zap.Logger
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	supp  map[string]int
}

// New returns a Logger that writes to l at most once per every per key.
func New(l *zap.Logger, every time.Duration) *Logger {
	return &Logger{log: l, every: every, last: map[string]time.Time{}, supp: map[string]int{}}
}

// Warn logs msg at warn level unless key was logged less than the interval
// ago; the next line that is written carries "suppressed": the count held
// back since the previous one. Keys must come from a bounded set (a
// condition's name, a component's), never from a peer.
func (r *Logger) Warn(key, msg string, fields ...zap.Field) {
	if fields, ok := r.allow(key, fields); ok {
		r.log.Warn(msg, fields...)
	}
}

// Error is Warn at error level.
func (r *Logger) Error(key, msg string, fields ...zap.Field) {
	if fields, ok := r.allow(key, fields); ok {
		r.log.Error(msg, fields...)
	}
}

func (r *Logger) allow(key string, fields []zap.Field) ([]zap.Field, bool) {
	r.mu.Lock()
	now := time.Now()
	if t, ok := r.last[key]; ok && now.Sub(t) < r.every {
		r.supp[key]++
		r.mu.Unlock()
		return nil, false
	}
	n := r.supp[key]
	r.last[key] = now
	r.supp[key] = 0
	r.mu.Unlock()
	if n > 0 {
		fields = append(fields, zap.Int("suppressed", n))
	}
	return fields, true
}
