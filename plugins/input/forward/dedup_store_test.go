package forward

import (
	"math/rand/v2"
	"testing"
)

// TestIDStoreModel runs random pushes, pops and lookups against a plain
// queue and set: the store answers the same through block changes, shard
// growth and shrinking, and positions wrapping their 32-bit encoding.
func TestIDStoreModel(t *testing.T) {
	for _, start := range []uint64{0, 1<<32 - 3*blockIDs, 3 << 33} {
		s := newIDStore(100000)
		s.first, s.next = start, start // an empty store at an aligned position
		rng := rand.New(rand.NewPCG(1, start))
		var queue []idHash
		live := map[idHash]bool{}
		var gone []idHash
		newHash := func() idHash { return idHash{rng.Uint64(), rng.Uint64()} }
		ms := int64(1_700_000_000_000)
		for step := range 300000 {
			// Phases: grow to ~40000, shrink to ~100, grow again.
			pushP := 0.6
			if step%100000 >= 60000 {
				pushP = 0.3
			}
			switch r := rng.Float64(); {
			case r < pushP:
				h := newHash()
				ms++
				s.push(h, ms)
				queue = append(queue, h)
				live[h] = true
			case len(queue) > 0:
				h, at := s.oldest()
				if h != queue[0] {
					t.Fatalf("start %d step %d: oldest differs from the model", start, step)
				}
				if at < 1_700_000_000_000 || at > ms {
					t.Fatalf("start %d step %d: time %d out of range", start, step, at)
				}
				s.pop()
				delete(live, h)
				gone = append(gone, h)
				queue = queue[1:]
			}
			if s.len() != len(queue) {
				t.Fatalf("start %d step %d: len %d, model %d", start, step, s.len(), len(queue))
			}
			if step%97 == 0 && len(queue) > 0 {
				if h := queue[rng.IntN(len(queue))]; !s.contains(h) {
					t.Fatalf("start %d step %d: a live hash not found", start, step)
				}
				if len(gone) > 0 {
					if h := gone[rng.IntN(len(gone))]; s.contains(h) && !live[h] {
						t.Fatalf("start %d step %d: a popped hash found", start, step)
					}
				}
				if s.contains(newHash()) {
					t.Fatalf("start %d step %d: an unknown hash found", start, step)
				}
			}
		}
		n := 0
		for i := range s.shards {
			n += s.shards[i].n
			if 2*s.shards[i].n > len(s.shards[i].slots) {
				t.Fatalf("shard %d more than half full", i)
			}
		}
		if n != len(queue) {
			t.Fatalf("shards count %d ids, model %d", n, len(queue))
		}
		for _, h := range queue {
			if !s.contains(h) {
				t.Fatal("a live hash lost")
			}
		}
	}
}

// TestIDStoreRebase: an offset past 32 bits of milliseconds (49.7 days
// after the epoch) moves the epoch; every time stays exact.
func TestIDStoreRebase(t *testing.T) {
	s := newIDStore(100)
	const day = 24 * 3600 * 1000
	t0 := int64(1_700_000_000_000)
	s.push(idHash{1, 1}, t0) // sets the epoch
	s.push(idHash{2, 2}, t0+30*day)
	s.pop()
	s.push(idHash{3, 3}, t0+60*day) // 60 days after the epoch
	if s.epoch != t0+30*day {
		t.Fatalf("epoch %d, want the oldest id's time %d", s.epoch, t0+30*day)
	}
	if _, at := s.oldest(); at != t0+30*day {
		t.Fatalf("oldest at %d, want %d", at, t0+30*day)
	}
	if at := s.timeAt(s.next - 1); at != t0+60*day {
		t.Fatalf("newest at %d, want %d", at, t0+60*day)
	}
}
