package file

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

// deepRecord is {"seq": seq, "deep": [[[...]]]} with depth nested arrays.
func deepRecord(seq, depth int) []byte {
	rec := mpack.AppendMapHeader(nil, 2)
	rec = mpack.AppendString(rec, "seq")
	rec = mpack.AppendInt(rec, int64(seq))
	rec = mpack.AppendString(rec, "deep")
	for range depth {
		rec = append(rec, 0x91)
	}
	return append(rec, 0x01)
}

func plainRecord(seq int) []byte {
	rec := mpack.AppendMapHeader(nil, 2)
	rec = mpack.AppendString(rec, "seq")
	rec = mpack.AppendInt(rec, int64(seq))
	rec = mpack.AppendString(rec, "log")
	return mpack.AppendString(rec, "hello")
}

func entries(recs ...[]byte) []byte {
	var e []byte
	for _, r := range recs {
		e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000}, r)
	}
	return e
}

// readLines returns the file's lines as JSON objects.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %.200q", len(out)+1, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func errorsTotal(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "logship_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, "reason", reason) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// writeWithin runs o.Write on a goroutine and fails the test if it does
// not return within d (a hang, not a slow write: d is generous).
func writeWithin(t *testing.T, o *Output, b pipeline.Batch, d time.Duration) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- o.Write(context.Background(), b) }()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("Write of %s did not return within %s", b.Tag, d)
		return nil
	}
}

// TestMillionDeepRecord (issue 14): a record nested 1,000,000 levels is
// written at once, its deep part as the placeholder string, counted under
// errors_total{reason="record_too_deep"}; the events beside it and after it
// are written as usual.
func TestMillionDeepRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out", "all.log")
	reg := prometheus.NewRegistry()
	set := pipeline.Settings{Name: "file", Type: "file", Logger: zap.NewNop(), Metrics: pipeline.NewMetrics(reg).Component(pipeline.KindOutput, "file", "file")}
	o := &Output{cfg: &Config{Path: path, Mode: "0644"}, set: set}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No deferred Stop: it would wait for a Write that never returns.

	b1 := pipeline.Batch{Chunk: pipeline.Chunk{Tag: "deep", Entries: entries(plainRecord(0), deepRecord(1, 1_000_000), plainRecord(2)), Count: 3}}
	if err := writeWithin(t, o, b1, time.Minute); err != nil {
		t.Fatal(err)
	}
	b2 := pipeline.Batch{Chunk: pipeline.Chunk{Tag: "later", Entries: entries(plainRecord(3)), Count: 1}, Offset: 1}
	if err := writeWithin(t, o, b2, time.Minute); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}
	for i, l := range lines {
		if l["seq"] != float64(i) {
			t.Fatalf("line %d: %v", i, l)
		}
	}
	enc, _ := json.Marshal(lines[1]["deep"])
	if !strings.Contains(string(enc), mpack.JSONTooDeep) || len(enc) > 1000 {
		t.Fatalf("deep value written as %.300s", enc)
	}
	if n := errorsTotal(t, reg, "record_too_deep"); n != 1 {
		t.Fatalf("errors_total{reason=record_too_deep} = %v, want 1", n)
	}
	if err := o.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// chunkInput emits its chunks once and waits for their acks on Stop.
type chunkInput struct {
	chunks []pipeline.Chunk
	acked  sync.WaitGroup
	done   chan struct{}
}

func (in *chunkInput) Start(ctx context.Context, emit pipeline.Emitter) error {
	in.done = make(chan struct{})
	go func() {
		defer close(in.done)
		for _, c := range in.chunks {
			in.acked.Add(1)
			if err := emit.Emit(ctx, c, func(error) { in.acked.Done() }); err != nil {
				in.acked.Done()
				return
			}
		}
	}()
	return nil
}

func (in *chunkInput) Stop(context.Context) error {
	<-in.done
	in.acked.Wait()
	return nil
}

// TestMillionDeepRecordThroughBuffer: with the real runner and buffer, a
// 1,000,000-deep record in the buffer does not wedge the file output: the
// chunks after it are delivered, and the runner stops promptly.
func TestMillionDeepRecordThroughBuffer(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "all.log")
	buf, err := broker.Open(filepath.Join(dir, "buffer"), broker.WithPartitions(1), broker.WithSync(broker.SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	in := &chunkInput{}
	for i := range 5 {
		recs := [][]byte{plainRecord(2 * i)}
		if i == 1 {
			recs = append(recs, deepRecord(2*i+1, 1_000_000))
		} else {
			recs = append(recs, plainRecord(2*i+1))
		}
		in.chunks = append(in.chunks, pipeline.Chunk{Tag: fmt.Sprintf("t.%d", i), Entries: entries(recs...), Count: 2})
	}
	o := &Output{cfg: &Config{Path: path, Mode: "0644"}, set: pipeline.Settings{Name: "file", Type: "file", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindOutput, "file")}}
	comp := func(name string, kind pipeline.Kind, inst any) pipeline.Component {
		return pipeline.Component{Name: name, Type: "test", Kind: kind, Instance: pipeline.InstanceOf(kind, inst), Metrics: pipeline.NopMetrics(kind, name), Matcher: pipeline.MustCompileMatch("**")}
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{comp("in", pipeline.KindInput, in)}, nil, []pipeline.Component{comp("file", pipeline.KindOutput, o)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(readLines(t, path)) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 10 events written: the output is stuck", len(readLines(t, path)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	for i, l := range readLines(t, path) {
		if l["seq"] != float64(i) {
			t.Fatalf("line %d: %v", i, l)
		}
	}
}
