package tail

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/testutil"
)

// nested is a JSON object nesting levels objects deep, the top one
// included: {"a":{"a":...1...}}.
func nested(levels int) string {
	return strings.Repeat(`{"a":`, levels) + "1" + strings.Repeat("}", levels)
}

// nestedArrays is {"a":[[...[1]...]]} with levels levels in all.
func nestedArrays(levels int) string {
	return `{"a":` + strings.Repeat("[", levels-1) + "1" + strings.Repeat("]", levels-1) + "}"
}

// TestJSONDepthBound: 128 levels are transcoded, one more is refused (and
// recognised as too deep), for objects, arrays and the docker format's
// skipped fields alike.
func TestJSONDepthBound(t *testing.T) {
	for _, mk := range []func(int) string{nested, nestedArrays} {
		ok128 := mk(maxJSONDepth)
		out, ok := appendJSONRecord(nil, []byte(ok128), nil, 0)
		var m map[string]any
		if !ok || msgpack.Unmarshal(out, &m) != nil {
			t.Errorf("%d levels refused: %.40s", maxJSONDepth, ok128)
		}
		if tooDeep([]byte(ok128)) {
			t.Errorf("%d levels said to be too deep", maxJSONDepth)
		}
		deep := mk(maxJSONDepth + 1)
		if _, ok := appendJSONRecord(nil, []byte(deep), nil, 0); ok {
			t.Errorf("%d levels accepted", maxJSONDepth+1)
		}
		if !tooDeep([]byte(deep)) {
			t.Errorf("%d levels not said to be too deep", maxJSONDepth+1)
		}
		// docker: the top object is a level, so a field may nest 127.
		inner := mk(maxJSONDepth - 1)
		if _, ok := parseDocker([]byte(`{"log":"x\n","attrs":` + inner + `}`)); !ok {
			t.Errorf("docker line with %d levels refused", maxJSONDepth)
		}
		if _, ok := parseDocker([]byte(`{"log":"x\n","attrs":` + mk(maxJSONDepth) + `}`)); ok {
			t.Errorf("docker line with %d levels accepted", maxJSONDepth+1)
		}
	}
	// Brackets inside strings are not nesting.
	if tooDeep([]byte(`{"a":"` + strings.Repeat("{[", 1000) + `"}`)) {
		t.Error("brackets in a string counted")
	}
}

// TestJSONMillionLevels: a json or docker line nested 1,000,000 levels
// deep becomes {"log": LINE} (as a line that is not JSON does), costs
// linear time, is counted as too_deep, and the file goes on.
func TestJSONMillionLevels(t *testing.T) {
	deep := nested(1_000_000) // about 6MB
	start := time.Now()
	if _, ok := appendJSONRecord(nil, []byte(deep), nil, 0); ok {
		t.Fatal("accepted")
	}
	if !tooDeep([]byte(deep)) {
		t.Fatal("not too deep")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	for _, format := range []string{FormatJSON, FormatDocker, FormatCRI} {
		t.Run(format, func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				c.Format = format
				c.MaxLineBytes = 8 << 20
				c.ReadBufferBytes = 16 << 20
				c.Batch.MaxBytes = 16 << 20
			})
			line := deep
			after := `{"log":"after\n","stream":"stdout"}`
			wantAfter := "after"
			wantDeep, deepCount := line, 1.0
			switch format {
			case FormatDocker:
				line = `{"log":"deep\n","stream":"stdout","attrs":` + deep + `}`
				wantDeep = line
			case FormatCRI:
				// cri does not parse the message: it is kept as it is.
				line = "2024-01-01T00:00:00Z stdout F " + deep
				after = "2024-01-01T00:00:00Z stdout F after"
				deepCount = 0
			default:
				after = `{"log":"after"}`
			}
			// The tail's own series are process-wide: compare with before.
			deep0 := testutil.Value(unparsedVec.WithLabelValues("tail.test", "too_deep"))
			invalid0 := testutil.Value(unparsedVec.WithLabelValues("tail.test", "invalid"))
			appendFile(t, h.path("a.log"), line+"\n"+after+"\n")
			h.start()
			testutil.CheckFor(t, 10*time.Second, func() error {
				if n := h.e.count(); n != 2 {
					return fmt.Errorf("%d records", n)
				}
				return nil
			})
			recs := h.e.records()
			if format == FormatCRI {
				if recs[0].log() != deep || recs[0].m["stream"] != "stdout" {
					t.Errorf("cri line became %d fields, log of %d bytes", len(recs[0].m), len(recs[0].log()))
				}
			} else if recs[0].log() != wantDeep || len(recs[0].m) != 1 {
				t.Errorf("deep line became %d fields, log of %d bytes", len(recs[0].m), len(recs[0].log()))
			}
			if recs[1].log() != wantAfter {
				t.Errorf("next line %v", recs[1].m)
			}
			if n, _ := h.metricValue("logship_tail_unparsed_lines_total", map[string]string{"reason": "too_deep"}); n-deep0 != deepCount {
				t.Errorf("too_deep counted %v", n-deep0)
			}
			if n, _ := h.metricValue("logship_tail_unparsed_lines_total", map[string]string{"reason": "invalid"}); n != invalid0 {
				t.Errorf("invalid counted %v", n)
			}
		})
	}
}
