package ratelog

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestWarnOncePerIntervalPerKey(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r := New(zap.New(core), time.Hour)
	for range 5 {
		r.Warn("a", "first")
	}
	r.Warn("b", "second")
	if n := logs.Len(); n != 2 {
		t.Fatalf("%d lines, want one per key: %v", n, logs.All())
	}
	r.every = 0 // the interval has passed
	r.Warn("a", "first")
	all := logs.All()
	if len(all) != 3 {
		t.Fatalf("%d lines, want 3", len(all))
	}
	if got := all[2].ContextMap()["suppressed"]; got != int64(4) {
		t.Fatalf("suppressed = %v, want 4", got)
	}
}
