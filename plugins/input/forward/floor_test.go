package forward

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/pipeline"
)

// countOut counts the events a pipeline delivers.
type countOut struct{ n chan int }

func (o *countOut) Start(context.Context) error { return nil }
func (o *countOut) Stop(context.Context) error  { return nil }
func (o *countOut) Write(_ context.Context, b pipeline.Batch) error {
	o.n <- b.Count
	return nil
}

// TestStoredIDsRecoveredFromBuffer: a kill between storing a chunk and
// journaling its id leaves the journal (and its floor) behind the buffer.
// The ids are in the buffer's records, so at the next start the input
// reads them back after the floor and a resend of such a chunk is
// acknowledged, not stored again. Also without a floor file (a journal
// from before floors): every record is read. Before, both were stored
// twice.
func TestStoredIDsRecoveredFromBuffer(t *testing.T) {
	for _, withFloor := range []bool{true, false} {
		t.Run(map[bool]string{true: "floor", false: "no-floor"}[withFloor], func(t *testing.T) {
			dataDir := t.TempDir()
			buf, err := broker.Open(filepath.Join(dataDir, "buffer"), broker.WithPartitions(1))
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Close()
			out := &countOut{n: make(chan int, 100)}
			run := func() (*Input, *pipeline.Runner) {
				cfg := defaultConfig()
				cfg.Listen = "127.0.0.1:0"
				set := pipeline.Settings{Name: "fwd", Type: "forward", DataDir: dataDir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "fwd")}
				in, err := New(set, cfg)
				if err != nil {
					t.Fatal(err)
				}
				r := pipeline.NewRunner(buf, zap.NewNop(),
					[]pipeline.Component{{Name: "fwd", Type: "forward", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: set.Metrics}}, nil,
					[]pipeline.Component{{Name: "out", Type: "count", Kind: pipeline.KindOutput, Matcher: mustMatch(t, "**"), Instance: pipeline.Instance{Output: out}, Metrics: pipeline.NopMetrics(pipeline.KindOutput, "out")}})
				if err := r.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				return in, r
			}
			send := func(in *Input, id string) {
				t.Helper()
				c := dial(t, in)
				defer c.Close()
				if _, err := c.Write(mp(t, []any{"t", 1, map[string]any{"id": id}, map[string]any{"chunk": id}})); err != nil {
					t.Fatal(err)
				}
				if got, err := readAck(t, c, 5*time.Second); err != nil || got != id {
					t.Fatalf("ack of %s: %q %v", id, got, err)
				}
			}
			in, r := run()
			send(in, "A")
			// what a kill right after A was journaled would have left
			journal := filepath.Join(dataDir, "input", "fwd", "chunk-ids")
			time.Sleep(3 * floorEvery)
			savedJournal, err := os.ReadFile(journal)
			if err != nil {
				t.Fatal(err)
			}
			savedFloor, err := os.ReadFile(journal + ".floor")
			if err != nil {
				t.Fatal(err)
			}
			if string(savedFloor) != floorMagic+"\n1\n" {
				t.Fatalf("floor file %q after one chunk", savedFloor)
			}
			send(in, "B")
			send(in, "C")
			if err := r.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(journal, savedJournal, 0o644); err != nil {
				t.Fatal(err)
			}
			if withFloor {
				err = os.WriteFile(journal+".floor", savedFloor, 0o644)
			} else {
				err = os.Remove(journal + ".floor")
			}
			if err != nil {
				t.Fatal(err)
			}

			in, r = run()
			defer r.Stop(context.Background())
			for _, id := range []string{"A", "B", "C", "D"} {
				send(in, id)
			}
			// A, B, C once and D: 4 events delivered, no fifth
			got := 0
			deadline := time.After(5 * time.Second)
			for got < 4 {
				select {
				case n := <-out.n:
					got += n
				case <-deadline:
					t.Fatalf("%d events delivered, want 4", got)
				}
			}
			select {
			case n := <-out.n:
				t.Fatalf("%d more events delivered: a resend stored twice", n)
			case <-time.After(300 * time.Millisecond):
			}
			if next := buf.NextOffset(0); next != 4 {
				t.Fatalf("%d records stored, want 4", next)
			}
		})
	}
}

func mustMatch(t *testing.T, p string) *pipeline.Matcher {
	m, err := pipeline.CompileMatch(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
