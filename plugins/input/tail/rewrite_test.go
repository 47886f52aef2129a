package tail

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// rewrite truncates path in place (same inode) and writes s.
func rewrite(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// rewritten is 500 lines whose first 256 bytes are those of
// lines("a", 0, 400): the first 30 lines are the same, the rest new.
func rewritten() (string, []string) {
	return lines("a", 0, 30) + lines("n", 30, 500), append(want("a", 0, 30), want("n", 30, 500)...)
}

// TestRewrittenWhileStopped: a file truncated and written again while
// logship was stopped, with the same first 256 bytes and longer than the
// checkpoint, is read from its start (all 500 new lines), not resumed at
// the old offset; a plain restart still resumes exactly.
func TestRewrittenWhileStopped(t *testing.T) {
	h := newHarness(t, nil)
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 400))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 400)) })
	h.stop()

	// A plain restart: exactly the new lines.
	appendFile(t, p, lines("a", 400, 410))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[400:], want("a", 400, 410)) })
	h.stop()
	if n := h.e.count(); n != 410 {
		t.Fatalf("%d lines after a plain restart, want 410", n)
	}

	content, wantNew := rewritten()
	rewrite(t, p, content)
	rewritten0 := testutil.Value(rotationVec.WithLabelValues("tail.test", "rewritten"))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[410:], wantNew) })
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count(); n != 910 {
			return fmt.Errorf("%d lines, want 410+500", n)
		}
		return nil
	})
	if d := testutil.Value(rotationVec.WithLabelValues("tail.test", "rewritten")) - rewritten0; d != 1 {
		t.Errorf("rotations_total{kind=rewritten} went up by %v", d)
	}
	h.stop()

	// And it resumes exactly after that.
	appendFile(t, p, lines("n", 500, 505))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[910:], want("n", 500, 505)) })
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count(); n != 915 {
			return fmt.Errorf("%d lines, want 915", n)
		}
		return nil
	})
}

// TestLegacyCheckpointResumes: a checkpoint written before the tail hash
// existed (no tail_len, tail_fp) still resumes at its offset.
func TestLegacyCheckpointResumes(t *testing.T) {
	h := newHarness(t, nil)
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 100))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 100)) })
	h.stop()
	path := h.checkpointPath()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cf checkpointFile
	if err := json.Unmarshal(b, &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.Files) != 1 || cf.Files[0].TailLen != tailBytes {
		t.Fatalf("checkpoints %+v", cf.Files)
	}
	cf.Files[0].TailLen, cf.Files[0].TailFP, cf.Files[0].Sum = 0, 0, 0
	b, _ = json.Marshal(&cf)
	write(t, path, b)
	appendFile(t, p, lines("a", 100, 110))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[100:], want("a", 100, 110)) })
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count(); n != 110 {
			return fmt.Errorf("%d lines, want 110", n)
		}
		return nil
	})
	if len(h.asides()) != 0 {
		t.Error("a legacy checkpoint file was set aside")
	}
}

// TestRewrittenWhileReading: the same rewrite while the reader is held
// up (its next read would land past the old offset in new content) is
// noticed and the file read again from its start.
func TestRewrittenWhileReading(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.ReadBufferBytes = 4096
		c.MaxLineBytes = 1024
		c.Batch.MaxEvents = 10
	})
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 400)) // 3600 bytes: one block
	h.e.block = make(chan struct{})
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		h.in.mu.Lock()
		defer h.in.mu.Unlock()
		for _, tl := range h.in.files {
			if tl.m.bytes != nil {
				return nil
			}
		}
		return fmt.Errorf("not open")
	})
	time.Sleep(100 * time.Millisecond) // the block is read, Emit is waiting
	content, wantNew := rewritten()
	rewrite(t, p, content)
	h.e.mu.Lock()
	close(h.e.block)
	h.e.block = nil
	h.e.mu.Unlock()
	wantAll := append(want("a", 0, 400), wantNew...)
	testutil.CheckFor(t, 5*time.Second, func() error {
		got := h.e.logs()
		if len(got) < 400 {
			return fmt.Errorf("%d lines", len(got))
		}
		if err := exactlyOnce(got[:400], want("a", 0, 400)); err != nil {
			return err
		}
		return exactlyOnce(got[400:], wantNew)
	})
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count(); n != len(wantAll) {
			return fmt.Errorf("%d lines, want %d", n, len(wantAll))
		}
		return nil
	})
}

// TestRewrittenNotTakenForCopy: files that share their first bytes (a
// fixed header) are not copies of one another: when a.log was rewritten
// while logship was stopped, a new b.log with the same header is read from
// its start, not from a.log's old offset.
func TestRewrittenNotTakenForCopy(t *testing.T) {
	h := newHarness(t, nil)
	header := lines("header", 0, 40) // 600 bytes, more than the fingerprint
	a, b := h.path("a.log"), h.path("b.log")
	appendFile(t, a, header+lines("a", 0, 300))
	h.start()
	wantA := append(want("header", 0, 40), want("a", 0, 300)...)
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantA) })
	h.stop()
	n0 := h.e.count()

	rewrite(t, a, header+lines("n", 0, 400))
	appendFile(t, b, header+lines("b", 0, 400))
	appendFile(t, h.path("c.log"), header+lines("c", 0, 10)) // shorter than a's old offset
	h.start()
	wantNew := append(append(want("header", 0, 40), want("n", 0, 400)...), append(want("header", 0, 40), want("b", 0, 400)...)...)
	wantNew = append(append(wantNew, want("header", 0, 40)...), want("c", 0, 10)...)
	testutil.CheckFor(t, 5*time.Second, func() error {
		got := h.e.logs()[n0:]
		var hdr, rest []string
		for _, l := range got {
			if len(l) > 6 && l[:6] == "header" {
				hdr = append(hdr, l)
			} else {
				rest = append(rest, l)
			}
		}
		if len(hdr) != 120 {
			return fmt.Errorf("%d header lines, want 120", len(hdr))
		}
		return exactlyOnce(rest, append(append(want("n", 0, 400), want("b", 0, 400)...), want("c", 0, 10)...))
	})
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count() - n0; n != len(wantNew) {
			return fmt.Errorf("%d lines, want %d", n, len(wantNew))
		}
		return nil
	})
}

// TestCopytruncateWhileStoppedSameHead: logrotate's copytruncate while
// logship was stopped, and the new content starts like the old: the
// lines the old content held past the checkpoint are read from the copy
// (app.log.1, not matched by the paths), the new content from its start.
func TestCopytruncateWhileStoppedSameHead(t *testing.T) {
	h := newHarness(t, nil)
	p := h.path("a.log")
	appendFile(t, p, lines("a", 0, 400))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 400)) })
	h.stop()
	appendFile(t, p, lines("a", 400, 420)) // never read before the rotation
	copyFile(t, p, p+".1")
	content, _ := rewritten()
	rewrite(t, p, content)
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		got := h.e.logs()[400:]
		// The new content repeats a-000000..a-000029 of the old.
		var rest []string
		dups := 0
		for _, l := range got {
			if l < "a-000030" {
				dups++
				continue
			}
			rest = append(rest, l)
		}
		if dups != 30 {
			return fmt.Errorf("%d lines a-0000xx, want 30", dups)
		}
		return exactlyOnce(rest, append(want("a", 400, 420), want("n", 30, 500)...))
	})
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count() - 400; n != 520 {
			return fmt.Errorf("%d lines after the restart, want 520", n)
		}
		return nil
	})
}
