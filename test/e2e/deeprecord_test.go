package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
)

// TestDeepRecordInBuffer (issue 14): a record nested 1,000,000 levels that
// is already in the buffer (written before the forward input refused such
// events at the door) does not wedge the file output: it is written with
// its deep part as a placeholder, the events after it are delivered, and
// SIGTERM stops the agent at once.
func TestDeepRecordInBuffer(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	out := filepath.Join(dir, "out.log")

	buf, err := broker.Open(filepath.Join(data, "buffer"), broker.WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	record := func(seq, depth int) []byte {
		rec := mpack.AppendMapHeader(nil, 2)
		rec = mpack.AppendString(rec, "seq")
		rec = mpack.AppendInt(rec, int64(seq))
		rec = mpack.AppendString(rec, "v")
		for range depth {
			rec = append(rec, 0x81, 0xa1, 'k') // {"k": ...
		}
		return append(rec, 0x01)
	}
	seq := 0
	for chunk := range 3 {
		var entries []byte
		for i := range 5 {
			depth := 0
			if chunk == 1 && i == 2 {
				depth = 1_000_000
			}
			entries = mpack.AppendEntry(entries, mpack.EventTime{Sec: 1_700_000_000}, record(seq, depth))
			seq++
		}
		if _, err := buf.Append(context.Background(), "app.deep", entries, 5); err != nil {
			t.Fatal(err)
		}
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: "", shutdown_timeout: 5s}
buffer: {partitions: 1}
inputs:
  - {type: forward, listen: %s}
outputs:
  - {type: file, name: out, path: %s}
`, data, testutil.FreeAddr(t), out))
	p := start(t, "agent", "-c", cfg)
	var lines []map[string]any
	testutil.CheckFor(t, 30*time.Second, func() error {
		if lines = readJSONLines(t, out); len(lines) < seq {
			return fmt.Errorf("%d of %d events written", len(lines), seq)
		}
		return nil
	})
	for i, l := range lines {
		if l["seq"] != float64(i) {
			t.Fatalf("line %d: seq %v", i, l["seq"])
		}
	}
	if s := fmt.Sprint(lines[7]["v"]); !strings.Contains(s, mpack.JSONTooDeep) {
		t.Fatalf("deep value written as %.200s", s)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
