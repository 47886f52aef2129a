//go:build linux

package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Chunks of 1000 events of ~200 bytes: ~200 KB, the unit inputs append.
const (
	benchEvents    = 1000
	benchEventSize = 200
	benchChunk     = benchEvents * benchEventSize
)

func benchEntries() []byte {
	b := make([]byte, benchChunk)
	for i := range b {
		b[i] = byte(i*7 + i/benchEventSize)
	}
	return b
}

func benchOpen(b *testing.B, mode SyncMode, opts ...Option) *Broker {
	b.Helper()
	br, err := Open(b.TempDir(), append([]Option{WithPartitions(1), WithSync(mode), WithMaxBytes(64 << 30)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close() })
	settle()
	return br
}

// settle flushes what earlier benchmarks left dirty, so that each one
// starts from a quiet disk.
func settle() { unix.Sync() }

// BenchmarkDiskLimit writes the same bytes as the append benchmarks with
// plain sequential write(2) calls into one file and fdatasync: once at the
// end, or every 8 or 64 MiB written. The fastest is what the disk can
// take, the yardstick for the broker.
func BenchmarkDiskLimit(b *testing.B) {
	for _, every := range []int{0, 8 << 20, 64 << 20} {
		name := "fsync=end"
		if every > 0 {
			name = fmt.Sprintf("fsync=%dMiB", every>>20)
		}
		b.Run(name, func(b *testing.B) {
			data := benchEntries()
			f, err := os.Create(filepath.Join(b.TempDir(), "plain"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			settle()
			b.SetBytes(benchChunk)
			b.ResetTimer()
			unsynced := 0
			for i := 0; i < b.N; i++ {
				if _, err := f.Write(data); err != nil {
					b.Fatal(err)
				}
				unsynced += len(data)
				if every > 0 && unsynced >= every {
					if err := unix.Fdatasync(int(f.Fd())); err != nil {
						b.Fatal(err)
					}
					unsynced = 0
				}
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkAppend appends b.N chunks: one appender calling Append (always,
// none), one appender pipelining AppendAsync (interval: an input does that
// while fsync is pending), or 8 concurrent Append callers.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		mode      SyncMode
		appenders int
		async     bool
	}{
		{SyncInterval, 1, true},
		{SyncAlways, 1, false},
		{SyncAlways, 8, false},
		{SyncNone, 1, false},
	} {
		name := fmt.Sprintf("sync=%s/appenders=%d", tc.mode, tc.appenders)
		if tc.async {
			name += "/async"
		}
		b.Run(name, func(b *testing.B) {
			br := benchOpen(b, tc.mode)
			data := benchEntries()
			ctx := context.Background()
			b.SetBytes(benchChunk)
			b.ResetTimer()
			if tc.async {
				var wg sync.WaitGroup
				wg.Add(b.N)
				for i := 0; i < b.N; i++ {
					if err := br.AppendAsync(ctx, "bench", data, benchEvents, func(_ Pos, err error) {
						if err != nil {
							b.Error(err)
						}
						wg.Done()
					}); err != nil {
						b.Fatal(err)
					}
				}
				wg.Wait()
				return
			}
			var wg sync.WaitGroup
			for a := 0; a < tc.appenders; a++ {
				n := b.N / tc.appenders
				if a < b.N%tc.appenders {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n; i++ {
						if _, err := br.Append(ctx, "bench", data, benchEvents); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkRead reads chunks back through a cursor from the page cache.
func BenchmarkRead(b *testing.B) {
	br := benchOpen(b, SyncNone)
	data := benchEntries()
	const stored = 500 // 100 MB, read round and round
	for i := 0; i < stored; i++ {
		if _, err := br.Append(context.Background(), "bench", data, benchEvents); err != nil {
			b.Fatal(err)
		}
	}
	c, err := br.Cursor("bench", 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < stored; i++ { // warm the page cache
		if _, err := c.Next(ctx); err != nil {
			b.Fatal(err)
		}
	}
	c.Reset()
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%stored == 0 {
			c.Reset()
		}
		r, err := c.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Entries) != benchChunk {
			b.Fatalf("read %d bytes", len(r.Entries))
		}
	}
}

// BenchmarkReadRelease is BenchmarkRead by a reader that gives each record
// back once done with it (Record.Release), as the runner does for the
// forward output: catching up (the records back to back, as when an
// output lags) and at the tail (each record read right after it was
// appended, as behind a synchronous sender).
func BenchmarkReadRelease(b *testing.B) {
	b.Run("catchup", func(b *testing.B) {
		br := benchOpen(b, SyncNone)
		data := benchEntries()
		const stored = 500
		for i := 0; i < stored; i++ {
			if _, err := br.Append(context.Background(), "bench", data, benchEvents); err != nil {
				b.Fatal(err)
			}
		}
		c, err := br.Cursor("bench", 0)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%stored == 0 {
				c.Reset()
			}
			r, err := c.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if len(r.Entries) != benchChunk {
				b.Fatalf("read %d bytes", len(r.Entries))
			}
			r.Release()
		}
	})
	b.Run("tail", func(b *testing.B) {
		br := benchOpen(b, SyncNone, WithSegmentBytes(1<<30))
		data := benchEntries()
		c, err := br.Cursor("bench", 0)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.SetBytes(benchChunk)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if _, err := br.Append(ctx, "bench", data, benchEvents); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			r, err := c.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if len(r.Entries) != benchChunk {
				b.Fatalf("read %d bytes", len(r.Entries))
			}
			r.Release()
		}
	})
}

// BenchmarkAppendReadTail appends a chunk and reads it back through a
// cursor right behind the writer, as the relay does for each chunk of a
// synchronous sender (without the fdatasync, which is the disk's): the
// buffer's whole cost per chunk between an input and an output. Each chunk
// is first copied into pooled memory, as the forward input reads a request:
// "copy" appends it from there as any appender, and the reader gets it back
// from the segment; "owned" hands the memory over (AppendAsyncOwned) and
// the reader gets it from the tail cache.
func BenchmarkAppendReadTail(b *testing.B) {
	for _, owned := range []bool{false, true} {
		name := map[bool]string{false: "copy", true: "owned"}[owned]
		b.Run(name, func(b *testing.B) {
			br := benchOpen(b, SyncNone, WithSegmentBytes(256<<20))
			data := benchEntries()
			c, err := br.Cursor("bench", 0)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			done := func(Pos, error) {}
			b.SetBytes(benchChunk)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				own := GetBuffer(benchChunk)
				entries := (*own)[:benchChunk]
				copy(entries, data) // what reading the request costs the input
				if owned {
					err = br.AppendAsyncOwned(ctx, "bench", nil, entries, benchEvents, own, done)
				} else {
					err = br.AppendAsyncOwned(ctx, "bench", nil, entries, benchEvents, nil, done)
					PutBuffer(own)
				}
				if err != nil {
					b.Fatal(err)
				}
				r, err := c.Next(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(r.Entries) != benchChunk {
					b.Fatalf("read %d bytes", len(r.Entries))
				}
				r.Release()
				if i%256 == 255 { // let retention delete what was read
					if err := c.Commit(r.Offset); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
