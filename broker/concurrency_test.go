package broker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// TestManyAppendersAndReaders runs appenders (sync and async) and two
// outputs per partition, one of which re-reads after "failed deliveries",
// with small segments so that rolls and retention run all along. Run it
// with -race.
func TestManyAppendersAndReaders(t *testing.T) {
	const (
		parts     = 3
		appenders = 8
		perTag    = 300
	)
	n := perTag
	if testing.Short() {
		n = 100
	}
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			b := openT(t, t.TempDir(), WithPartitions(parts), WithSync(mode), WithSyncInterval(2*time.Millisecond),
				WithSegmentBytes(16<<10), WithMaxBytes(1<<20))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var readers sync.WaitGroup
			total := appenders * n
			counts := make(chan int, 2*parts)
			for p := 0; p < parts; p++ {
				for _, out := range []string{"steady", "flaky"} {
					c, err := b.Cursor(out, p)
					if err != nil {
						t.Fatal(err)
					}
					readers.Add(1)
					go func() {
						defer readers.Done()
						last := map[string]int{}
						got, reads := 0, 0
						for {
							r, err := c.Next(ctx)
							if err != nil {
								counts <- got
								return
							}
							reads++
							if out == "flaky" && reads%17 == 0 {
								c.Reset() // a failed delivery: read again from the commit point
								continue
							}
							f := strings.SplitN(string(r.Entries), "|", 3)
							i, _ := strconv.Atoi(f[1])
							if prev, ok := last[r.Tag]; ok && i != prev+1 {
								t.Errorf("%s p%d: %s record %d after %d", out, p, r.Tag, i, prev)
							}
							last[r.Tag] = i
							got++
							if err := c.Commit(r.Offset); err != nil {
								t.Error(err)
							}
						}
					}()
				}
			}
			var wg sync.WaitGroup
			for a := 0; a < appenders; a++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tag := fmt.Sprintf("app.%d", a)
					var pending sync.WaitGroup
					for i := 0; i < n; i++ {
						data := payload(tag, i, 200+i%900)
						if a%2 == 0 {
							if _, err := b.Append(ctx, tag, data, 1); err != nil {
								t.Error(err)
								return
							}
							continue
						}
						pending.Add(1)
						if err := b.AppendAsync(ctx, tag, data, 1, func(_ Pos, err error) {
							if err != nil {
								t.Error(err)
							}
							pending.Done()
						}); err != nil {
							t.Error(err)
							return
						}
					}
					pending.Wait()
				}()
			}
			wg.Wait()
			// wait until both outputs have committed everything, then stop them
			testutil.CheckFor(t, 30*time.Second, func() error {
				for _, cs := range b.Stats().Cursors {
					if cs.Lag != 0 {
						return fmt.Errorf("%s p%d lags %d", cs.Name, cs.Partition, cs.Lag)
					}
				}
				return nil
			})
			cancel()
			readers.Wait()
			close(counts)
			sum := 0
			for c := range counts {
				sum += c
			}
			// each output saw every record at least once
			if sum < 2*total {
				t.Fatalf("outputs saw %d records, want >= %d", sum, 2*total)
			}
			st := b.Stats()
			if st.CorruptRecords != 0 || st.DroppedRecords != 0 {
				t.Fatalf("corrupt %d dropped %d", st.CorruptRecords, st.DroppedRecords)
			}
		})
	}
}
