package forward

import (
	"math"
	"testing"
	"time"
)

// TestIDStoreClockJump: an id pushed more than 2^32 ms (49.7 days) after
// the oldest live one keeps its time (the epoch moves past the older ids,
// which count as committed at it) instead of being clamped 2^32 ms after
// the oldest.
func TestIDStoreClockJump(t *testing.T) {
	s := newIDStore(100)
	ms := int64(1_700_000_000_000)
	s.push(idHash{1, 1}, ms)
	s.push(idHash{2, 2}, ms+10)
	later := ms + math.MaxUint32 + 5000
	s.push(idHash{3, 3}, later)
	if got := s.timeAt(s.next - 1); got != later {
		t.Fatalf("the new id's time %d, want %d (moved back by %dms)", got, later, later-got)
	}
	if got := s.timeAt(s.first); got != later-math.MaxUint32 {
		t.Fatalf("the oldest id's time %d, want the new epoch %d", got, later-math.MaxUint32)
	}
	for _, h := range []idHash{{1, 1}, {2, 2}, {3, 3}} {
		if !s.contains(h) {
			t.Fatalf("%v lost", h)
		}
	}
}

// TestDedupClockJumpForward: after the wall clock jumps forward by more
// than 49.7 days while ids are live, those (expired) ids are forgotten
// and reported, and the ids committed after the jump are remembered for
// retention, not dropped as ancient by the next sweep.
func TestDedupClockJumpForward(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	var evicted []time.Duration
	d, err := openDedup("", 100, time.Minute, nil, func(age time.Duration, early bool) {
		if early {
			t.Errorf("an id %v old forgotten early", age)
		}
		evicted = append(evicted, age)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	setClock(d, &clock)
	for _, id := range []string{"a", "b", "c"} {
		commit(t, d, id)
	}
	advance(d, &clock, 60*24*time.Hour)
	commit(t, d, "after")
	advance(d, &clock, 30*time.Second)
	d.sweep()
	if !known(d, "after") {
		t.Fatal("an id committed 30s ago after the clock jump was forgotten")
	}
	if known(d, "a") || known(d, "c") || len(evicted) != 3 {
		t.Fatalf("the ids of before the jump: %d forgotten, want 3", len(evicted))
	}
	advance(d, &clock, 31*time.Second)
	d.sweep()
	if known(d, "after") {
		t.Fatal("an id 61s old still remembered")
	}
}
