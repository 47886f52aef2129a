package broker

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkSyncSender: one appender with one 2 KB chunk in flight at a
// time (AppendAsync, then wait for its done), as the forward input relays
// a synchronous sender. The figure to watch is CPU per op (perf stat, or
// the time command's user+sys over b.N), not ns/op, under SyncAlways.
//
//	go test -run '^$' -bench BenchmarkSyncSender -benchtime 20000x ./broker/
func BenchmarkSyncSender(b *testing.B) {
	for _, mode := range []SyncMode{SyncAlways, SyncNone} {
		b.Run("sync="+mode.String(), func(b *testing.B) {
			br := benchOpen(b, mode)
			data := bytes.Repeat([]byte{0x92}, 2000)
			ctx := context.Background()
			done := make(chan error, 1)
			reply := func(_ Pos, err error) { done <- err }
			b.ReportAllocs()
			for b.Loop() {
				if err := br.AppendAsync(ctx, "bench", data, 10, reply); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
