//go:build linux

package broker

import (
	"context"
	"testing"
)

// BenchmarkWake is one small append that a waiting reader gets, ping-pong
// (the reader waits for every record, as an output that keeps up does):
// the publish that wakes it and the wake-up itself. SyncNone, so that no
// fdatasync hides the cost.
func BenchmarkWake(b *testing.B) {
	br := benchOpen(b, SyncNone)
	c, err := br.Cursor("bench", 0)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 2000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan error)
	go func() {
		for {
			_, err := c.Next(ctx)
			if ctx.Err() != nil {
				return
			}
			got <- err
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := br.Append(ctx, "bench", data, 10); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cancel()
}
