package tail

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// TestChunksHandOverTheirMemory: every chunk is built in memory of the
// buffer's pool and handed over with it (Chunk.Own), within
// batch.max_bytes; the tailer never writes to it again once Emit took it,
// and a chunk Emit refused (its memory still the tailer's) is read again:
// every line arrives once.
func TestChunksHandOverTheirMemory(t *testing.T) {
	for _, format := range []string{FormatNone, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			const maxBytes = 4 << 10
			h := newHarness(t, func(c *Config) {
				c.Format = format
				c.Batch.MaxBytes = maxBytes
			})
			type handed struct {
				own  *[]byte
				data []byte
			}
			var got []handed
			var errs []string
			h.e.taken = func(c pipeline.Chunk) {
				switch {
				case c.Own == nil:
					errs = append(errs, "a chunk without Own")
				case len(c.Entries) == 0 || &c.Entries[0] != &(*c.Own)[0]:
					errs = append(errs, "entries not at the start of Own")
				case cap(*c.Own) < maxBytes || bits.OnesCount(uint(cap(*c.Own))) != 1:
					errs = append(errs, fmt.Sprintf("Own of %d bytes: not the pool's", cap(*c.Own)))
				case len(c.Entries) > maxBytes:
					errs = append(errs, fmt.Sprintf("a chunk of %d bytes past batch.max_bytes", len(c.Entries)))
				default:
					got = append(got, handed{c.Own, bytes.Clone(c.Entries)})
				}
			}
			h.e.emitErr = func(n int) error {
				if n == 3 {
					return errors.New("not taken (test)")
				}
				return nil
			}
			var b strings.Builder
			var wantLogs []string
			for i := range 3000 {
				pad := strings.Repeat("x", i%300)
				msg := fmt.Sprintf("m-%06d-%s", i, pad)
				if format == FormatJSON {
					// numbers grow from 3 bytes of JSON to 9 of msgpack
					fmt.Fprintf(&b, `{"log":%q,"n":[%s]}`+"\n", msg, strings.TrimSuffix(strings.Repeat("0e0,", i%50), ","))
				} else {
					b.WriteString(msg + "\n")
				}
				wantLogs = append(wantLogs, msg)
			}
			appendFile(t, h.path("a.log"), b.String())
			h.start()
			testutil.CheckFor(t, 10*time.Second, func() error { return exactlyOnce(h.e.logs(), wantLogs) })
			h.stop()
			h.e.mu.Lock()
			defer h.e.mu.Unlock()
			for _, e := range errs[:min(len(errs), 5)] {
				t.Error(e)
			}
			if h.e.refused != 1 {
				t.Errorf("%d chunks refused, want 1", h.e.refused)
			}
			if len(got) < 10 {
				t.Fatalf("%d chunks handed over, want many", len(got))
			}
			for i, g := range got {
				if !bytes.Equal((*g.own)[:len(g.data)], g.data) {
					t.Fatalf("chunk %d: its memory changed after it was handed over", i)
				}
			}
		})
	}
}
