package kafka

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
)

// TestRebalanceUnderLoad: while messages are produced, a second member
// joins the group and later the first one leaves. Every message is
// stored, none is lost, and the cooperative rebalances, which commit what
// is durable before giving partitions up, re-read few or none.
//
// In the second case the buffer is slow (acks after 200ms) and
// revoke_timeout is too short to wait for them: the new owner reads the
// chunks still on the way again, and still nothing is lost.
func TestRebalanceUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		ackDelay      time.Duration
		revokeTimeout time.Duration
		maxDups       int
	}{
		{"wait_for_acks", 2 * time.Millisecond, 2 * time.Second, 300},
		{"revoke_timeout_too_short", 200 * time.Millisecond, time.Millisecond, 30000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rebalanceUnderLoad(t, tc.ackDelay, tc.revokeTimeout, tc.maxDups)
		})
	}
}

func rebalanceUnderLoad(t *testing.T, ackDelay, revokeTimeout time.Duration, maxDups int) {
	c := cluster(t, kfake.SeedTopics(6, "logs"))
	const n, rounds = 30000, 30
	e := newEmitter(t)
	e.delay = ackDelay // acks come from the buffer's sync goroutine, later
	t.Cleanup(e.wg.Wait)
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 200
	cfg.RevokeTimeout = conftypes.Duration(revokeTimeout)

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range rounds {
			for i := r * n / rounds; i < (r+1)*n/rounds; i++ {
				rec := jsonMsg("a")(i)
				rec.Topic = "logs"
				cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Errorf("produce: %v", err)
					}
				})
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = cl.Flush(context.Background())
	}()

	a := startInput(t, cfg, e)
	waitCount(t, e, n/5, 10*time.Second)
	b := startInput(t, cfg, e)
	// Wait for b to own partitions and consume.
	testutil.CheckFor(t, 10*time.Second, func() error {
		b.in.mu.Lock()
		defer b.in.mu.Unlock()
		if len(b.in.parts) == 0 {
			return fmt.Errorf("b owns no partition")
		}
		return nil
	})
	waitCount(t, e, n/2, 10*time.Second)
	if err := a.stop(t, 10*time.Second); err != nil {
		t.Fatalf("stop a: %v", err)
	}
	wg.Wait()
	waitCount(t, e, n, 20*time.Second)
	time.Sleep(300 * time.Millisecond) // late duplicates
	missing, dups, extra := diff(idsOf(e.records()), ids("a", 0, n))
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("%d missing %s, %d unexpected %s", len(missing), head(missing), len(extra), head(extra))
	}
	t.Logf("%d messages, 2 rebalances: %d read twice", n, len(dups))
	if len(dups) > maxDups {
		t.Errorf("%d of %d messages read twice, want at most %d", len(dups), n, maxDups)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := sum(committed(t, c, "g", "logs")); got != n {
			return fmt.Errorf("committed offsets sum to %d, want %d", got, n)
		}
		return nil
	})
}

// TestRebalanceWhileBufferBlocked: a member whose buffer blocks (Emit
// does not return) does not hold a rebalance up: the batch it is emitting
// is cut short, the messages not emitted are fetched again, and a new
// member gets its share at once. Nothing is lost.
func TestRebalanceWhileBufferBlocked(t *testing.T) {
	t.Parallel()
	c := cluster(t, kfake.SeedTopics(6, "logs"))
	const n = 6000
	produce(t, c, "logs", n/2, jsonMsg("a"))
	ea, eb := newEmitter(t), newEmitter(t)
	cfg := testConfig(c, "g", "logs")
	cfg.Batch.MaxEvents = 50
	cfg.RebalanceTimeout = conftypes.Duration(20 * time.Second) // far above the wait measured
	a := startInput(t, cfg, ea)
	waitCount(t, ea, 100, 10*time.Second)
	block := make(chan struct{})
	ea.mu.Lock()
	ea.block = block
	ea.mu.Unlock()
	produce(t, c, "logs", n/2, func(i int) *kgo.Record { return jsonMsg("a")(n/2 + i) })
	time.Sleep(200 * time.Millisecond) // a is stuck in Emit
	start := time.Now()
	b := startInput(t, cfg, eb)
	testutil.CheckFor(t, 10*time.Second, func() error {
		b.in.mu.Lock()
		defer b.in.mu.Unlock()
		if len(b.in.parts) == 0 {
			return fmt.Errorf("b owns no partition")
		}
		return nil
	})
	t.Logf("b got partitions %s after joining while a was blocked", time.Since(start).Round(time.Millisecond))
	close(block)
	testutil.CheckFor(t, 20*time.Second, func() error {
		if got := ea.count() + eb.count(); got < n {
			return fmt.Errorf("%d stored, want %d", got, n)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	missing, dups, extra := diff(append(idsOf(ea.records()), idsOf(eb.records())...), ids("a", 0, n))
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("%d missing %s, %d unexpected %s", len(missing), head(missing), len(extra), head(extra))
	}
	t.Logf("%d messages: %d read twice", n, len(dups))
	_ = a
}
