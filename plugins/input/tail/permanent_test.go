package tail

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// TestPermanentAckErrorDrops: a chunk acked with a permanent error (the
// pipeline can never store it) is dropped and counted, the checkpoint
// moves past it and the file is not read again; the other chunks are
// stored once.
func TestPermanentAckErrorDrops(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
	}{
		{"permanent", pipeline.Permanent(errors.New("event larger than a buffer record (test)"))},
		{"broker.ErrTooLarge", fmt.Errorf("append: %w", broker.ErrTooLarge)},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 10 })
			h.e.ackErr = c.err
			h.e.fail = func(n int, _ []rec) bool { return n == 2 || n == 5 }
			p := h.path("a.log")
			appendFile(t, p, lines("a", 0, 100))
			rewinds0 := testutil.Value(rewindVec.WithLabelValues("tail.test"))
			h.start()
			var wantLogs []string
			for i := range 100 {
				if i/10 != 2 && i/10 != 5 {
					wantLogs = append(wantLogs, fmt.Sprintf("a-%06d", i))
				}
			}
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantLogs) })
			// Not read again: nothing more is emitted.
			stays(t, 500*time.Millisecond, func() error {
				h.e.mu.Lock()
				defer h.e.mu.Unlock()
				if len(h.e.emitted) != 100 || h.e.nChunks != 10 {
					return fmt.Errorf("%d events in %d chunks emitted, want 100 in 10", len(h.e.emitted), h.e.nChunks)
				}
				return nil
			})
			if n, _ := h.metricValue("logship_dropped_records_total", map[string]string{"reason": dropReason}); n != 20 {
				t.Errorf("dropped_records_total{reason=%s} = %v, want 20", dropReason, n)
			}
			if d := testutil.Value(rewindVec.WithLabelValues("tail.test")) - rewinds0; d != 0 {
				t.Errorf("%v rewinds", d)
			}
			h.stop()
			fi, _ := os.Stat(p)
			cf := readCheckpoints(t, h.data)
			if len(cf.Files) != 1 || cf.Files[0].Offset != fi.Size() {
				t.Errorf("checkpoint %+v, want offset %d", cf.Files, fi.Size())
			}
		})
	}
}

// TestPermanentEmitErrorDrops: Emit itself refusing a chunk for good is
// handled the same way; a retryable refusal is still read again.
func TestPermanentEmitErrorDrops(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Batch.MaxEvents = 10 })
	h.e.emitErr = func(n int) error {
		switch n {
		case 3:
			return pipeline.Permanent(errors.New("never storable (test)"))
		case 6:
			return errors.New("refused for now (test)")
		}
		return nil
	}
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 100))
	h.start()
	var wantLogs []string
	for i := range 100 {
		if i/10 != 3 {
			wantLogs = append(wantLogs, fmt.Sprintf("a-%06d", i))
		}
	}
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantLogs) })
	stays(t, 300*time.Millisecond, func() error { return exactlyOnce(h.e.logs(), wantLogs) })
	if n, _ := h.metricValue("logship_dropped_records_total", map[string]string{"reason": dropReason}); n != 10 {
		t.Errorf("dropped %v, want 10", n)
	}
	h.stop()
	fi, _ := os.Stat(p)
	if cf := readCheckpoints(t, h.data); len(cf.Files) != 1 || cf.Files[0].Offset != fi.Size() {
		t.Errorf("checkpoint %+v, want offset %d", cf.Files, fi.Size())
	}
}

// TestChunkBytesCapped: batch.max_bytes caps the chunks the input emits;
// only a single event larger than it makes a chunk of its own that is
// larger.
func TestChunkBytesCapped(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Batch.MaxEvents = 100000
		c.Batch.MaxBytes = 1024
		c.MaxLineBytes = 4096
	})
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 1000))
	big1, big2 := "1"+strings.Repeat("b", 3000), "2"+strings.Repeat("b", 3000)
	appendFile(t, p, big1+"\n"+big2+"\n")
	appendFile(t, p, lines("c", 0, 100))
	h.start()
	wantLogs := append(append(want("a", 0, 1000), big1, big2), want("c", 0, 100)...)
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantLogs) })
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	large := 0
	for i, n := range h.e.sizes {
		if n > 1024 {
			large++
			if n > 3100 {
				t.Errorf("chunk %d: %d bytes", i, n)
			}
		}
	}
	if large != 2 {
		t.Errorf("%d chunks over max_bytes, want the 2 single big events (sizes %v)", large, h.e.sizes)
	}
}
