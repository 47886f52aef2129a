package broker

import (
	"context"
	"encoding/binary"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The owned-memory stress: three cursors reading (holding records a while,
// scribbling over them before Release, Reset and Commit at random) behind a
// writer appending records in pooled memory it hands over (AppendAsyncOwned)
// or copies, while pooled memory is poisoned, under each sync mode and full
// policy. Every record read must hold exactly what was written at its
// offset, and nothing may wedge (drop_oldest deleting segments under the
// readers clamped them forward with the partition's lock held).

func stressFill(b []byte, i uint64) {
	binary.LittleEndian.PutUint64(b, i)
	for j := 8; j < len(b); j++ {
		b[j] = byte(i*131 + uint64(j)*7)
	}
}
func stressCheck(b []byte, off uint64) bool {
	if len(b) < 8 || binary.LittleEndian.Uint64(b) != off {
		return false
	}
	for j := 8; j < len(b); j++ {
		if b[j] != byte(off*131+uint64(j)*7) {
			return false
		}
	}
	return true
}

func runOwnedStress(t *testing.T, sync_ SyncMode, full FullPolicy) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1), WithSegmentBytes(2<<20), WithSync(sync_),
		WithSyncInterval(5*time.Millisecond), WithMaxBytes(16<<20), WithWhenFull(full), WithTailCache(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	// No deferred Close: on a wedged partition it would wait forever.
	d := 3 * time.Second
	if testing.Short() {
		d = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var bad atomic.Int64
	var wg sync.WaitGroup
	var next atomic.Uint64
	var durable atomic.Uint64 // highest offset acknowledged durable, +1
	for ci := 0; ci < 3; ci++ {
		c, err := b.Cursor("c"+string(rune('a'+ci)), 0)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(ci int, c *Cursor) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(ci)))
			var held []Record
			for ctx.Err() == nil {
				rec, err := c.Next(ctx)
				if err != nil {
					break
				}
				if !stressCheck(rec.Entries, rec.Offset) {
					bad.Add(1)
					t.Errorf("cursor %d: record %d corrupt (len %d)", ci, rec.Offset, len(rec.Entries))
				}
				held = append(held, rec)
				if len(held) > r.Intn(4) {
					for i := range held {
						if !stressCheck(held[i].Entries, held[i].Offset) {
							bad.Add(1)
							t.Errorf("cursor %d: held record %d changed", ci, held[i].Offset)
						}
						for j := range held[i].Entries {
							held[i].Entries[j] = 0xEE
						}
						held[i].Release()
					}
					held = held[:0]
				}
				switch r.Intn(50) {
				case 0:
					c.Reset()
				case 1, 2, 3:
					_ = c.Commit(rec.Offset)
				}
				if ci == 2 && r.Intn(20) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}(ci, c)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewSource(99))
		var mu sync.Mutex
		for ctx.Err() == nil {
			n := 64<<10 + r.Intn(600<<10)
			if r.Intn(3) == 0 {
				n = 16 + r.Intn(4000)
			}
			own := GetBuffer(n + 100)
			entries := (*own)[50 : 50+n]
			mu.Lock()
			off := next.Load()
			stressFill(entries, off)
			var o *[]byte
			if r.Intn(5) != 0 {
				o = own
			}
			err := b.AppendAsyncOwned(ctx, "t", nil, entries, 1, o, func(p Pos, err error) {
				if err == nil {
					for {
						d := durable.Load()
						if p.Offset+1 <= d || durable.CompareAndSwap(d, p.Offset+1) {
							break
						}
					}
				}
			})
			if err == nil {
				next.Add(1)
				if o == nil {
					PutBuffer(own)
				}
			} else if o != nil {
				PutBuffer(own)
			}
			mu.Unlock()
			// Poison: take pooled memory and scribble on it, to expose
			// anyone still reading memory that was given back.
			for k := 0; k < 2; k++ {
				p := GetBuffer(64<<10 + r.Intn(600<<10))
				for j := range *p {
					(*p)[j] = 0xAB
				}
				PutBuffer(p)
			}
		}
	}()
	wg.Wait()
	st := b.Stats()
	t.Logf("appended %d, tail reads %d, bad %d", next.Load(), st.TailReads, bad.Load())
	if next.Load() == 0 || bad.Load() != 0 {
		t.Fatalf("appended %d records, %d read corrupt", next.Load(), bad.Load())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOwnedStressAlwaysBlock(t *testing.T)        { runOwnedStress(t, SyncAlways, Block) }
func TestOwnedStressIntervalDropOldest(t *testing.T) { runOwnedStress(t, SyncInterval, DropOldest) }
func TestOwnedStressNoneDropOldest(t *testing.T)     { runOwnedStress(t, SyncNone, DropOldest) }
