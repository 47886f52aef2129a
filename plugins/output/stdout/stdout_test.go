package stdout

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// TestDeepRecord: a record nested far deeper than mpack.MaxJSONDepth is
// written at once as one valid line, its deep part as the placeholder.
func TestDeepRecord(t *testing.T) {
	rec := mpack.AppendMapHeader(nil, 1)
	rec = mpack.AppendString(rec, "deep")
	rec = append(rec, bytes.Repeat([]byte{0x81, 0xa1, 'k'}, 200_000)...)
	rec = append(rec, 0xc0)
	var e []byte
	e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1}, rec)
	var out bytes.Buffer
	o := New(pipeline.Settings{Name: "stdout", Metrics: pipeline.NopMetrics(pipeline.KindOutput, "stdout")}, &Config{Format: jsonl.Format{TagKey: "tag"}}, &out)
	if err := o.Write(context.Background(), pipeline.Batch{Chunk: pipeline.Chunk{Tag: "t", Entries: e, Count: 1}}); err != nil {
		t.Fatal(err)
	}
	line := out.String()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 || !json.Valid([]byte(line)) || !strings.Contains(line, mpack.JSONTooDeep) || !strings.HasPrefix(line, `{"tag":"t","deep":{"k":`) {
		t.Fatalf("%.300s", line)
	}
}
