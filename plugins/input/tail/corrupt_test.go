package tail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

func (h *harness) checkpointPath() string {
	return filepath.Join(h.data, "input", "tail.test", "checkpoints.json")
}

// asides lists the checkpoint files (or directory) set aside.
func (h *harness) asides() []string {
	m, _ := filepath.Glob(h.checkpointPath() + ".corrupt-*")
	d, _ := filepath.Glob(filepath.Dir(h.checkpointPath()) + ".corrupt-*")
	return append(m, d...)
}

// TestCorruptCheckpointsResume: a checkpoint file that is garbage no
// longer stops the input. It is moved aside and counted; files without a
// trusted checkpoint are read from their start, even with
// read_from_head: false, so the lines written while logship was stopped
// are delivered (with the earlier ones again), and a good file is written.
func TestCorruptCheckpointsResume(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReadFromHead = false })
	h.start()
	appendFile(t, h.path("a.log"), lines("a", 0, 100))
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 100)) })
	h.stop()
	// Meanwhile: a grows, b appears, and the checkpoint file is damaged.
	appendFile(t, h.path("a.log"), lines("a", 100, 150))
	appendFile(t, h.path("b.log"), lines("b", 0, 20))
	if err := os.WriteFile(h.checkpointPath(), []byte("{\"version\":1,\"files\":[{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt0 := testutil.Value(corruptVec.WithLabelValues("tail.test"))
	h.start()
	wantLogs := append(want("a", 0, 150), want("b", 0, 20)...)
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[100:], wantLogs) })
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count(); n != 270 {
			return fmt.Errorf("%d lines delivered in all, want 100+170", n)
		}
		return nil
	})
	if d := testutil.Value(corruptVec.WithLabelValues("tail.test")) - corrupt0; d != 1 {
		t.Errorf("checkpoint_corrupt_total went up by %v", d)
	}
	if n, _ := h.metricValue("logship_errors_total", map[string]string{"reason": "checkpoint_corrupt"}); n != 1 {
		t.Errorf("errors_total{checkpoint_corrupt} %v", n)
	}
	if a := h.asides(); len(a) != 1 {
		t.Errorf("set aside: %v", a)
	} else if b, _ := os.ReadFile(a[0]); !bytes.Contains(b, []byte("garbage")) {
		t.Errorf("set-aside file holds %q", b)
	}
	h.stop()
	// A good file was written: the next start resumes exactly.
	appendFile(t, h.path("a.log"), lines("a", 150, 160))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[270:], want("a", 150, 160)) })
	stays(t, 200*time.Millisecond, func() error {
		if n := h.e.count(); n != 280 {
			return fmt.Errorf("%d lines", n)
		}
		return nil
	})
	if a := h.asides(); len(a) != 1 {
		t.Errorf("set aside again: %v", a)
	}
}

// TestCorruptCheckpointKinds: a checkpoint file that is a directory,
// unreadable, empty, cut short mid-write, of an unknown version or with
// an entry whose checksum fails. Trusted entries resume exactly (a.log);
// the others are read from their start (b.log): exact counts each time.
func TestCorruptCheckpointKinds(t *testing.T) {
	for _, c := range []struct {
		name string
		// damage changes the good checkpoint file.
		damage func(t *testing.T, path string, good []byte)
		// aTrusted: a.log's entry survives.
		aTrusted bool
	}{
		{"directory", func(t *testing.T, path string, _ []byte) {
			_ = os.Remove(path)
			if err := os.MkdirAll(filepath.Join(path, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"unreadable", func(t *testing.T, path string, _ []byte) {
			readFile = func(p string) ([]byte, error) {
				return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrPermission}
			}
			t.Cleanup(func() { readFile = os.ReadFile })
		}, false},
		{"empty", func(t *testing.T, path string, _ []byte) { write(t, path, nil) }, false},
		{"checkpoint directory is a file", func(t *testing.T, path string, good []byte) {
			dir := filepath.Dir(path)
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			write(t, dir, good)
		}, false},
		{"cut in the second entry", func(t *testing.T, path string, good []byte) {
			j := bytes.LastIndex(good, []byte(`"dev"`))
			write(t, path, good[:j+10])
		}, true},
		{"cut in the first entry", func(t *testing.T, path string, good []byte) {
			j := bytes.Index(good, []byte(`"offset"`))
			write(t, path, good[:j+5])
		}, false},
		{"zeros after a crash", func(t *testing.T, path string, good []byte) {
			write(t, path, make([]byte, len(good)))
		}, false},
		{"unknown version", func(t *testing.T, path string, good []byte) {
			write(t, path, bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 7`), 1))
		}, false},
		{"bit flip in an offset", func(t *testing.T, path string, good []byte) {
			var cf checkpointFile
			if err := json.Unmarshal(good, &cf); err != nil {
				t.Fatal(err)
			}
			for i := range cf.Files {
				if strings.HasSuffix(cf.Files[i].Path, "b.log") {
					cf.Files[i].Offset ^= 1 << 12
				}
			}
			b, _ := json.Marshal(&cf)
			write(t, path, b)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.ReadFromHead = false })
			h.start()
			appendFile(t, h.path("a.log"), lines("a", 0, 100))
			appendFile(t, h.path("b.log"), lines("b", 0, 1000))
			all := append(want("a", 0, 100), want("b", 0, 1000)...)
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), all) })
			h.stop()
			appendFile(t, h.path("a.log"), lines("a", 100, 130))
			appendFile(t, h.path("b.log"), lines("b", 1000, 1010))
			good, err := os.ReadFile(h.checkpointPath())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(good, []byte(`"sum"`)) || bytes.Index(good, []byte("a.log")) > bytes.Index(good, []byte("b.log")) {
				t.Fatalf("unexpected checkpoint file %s", good)
			}
			c.damage(t, h.checkpointPath(), good)
			h.start()
			wantLogs := append(want("a", 100, 130), want("b", 0, 1010)...)
			if !c.aTrusted {
				wantLogs = append(wantLogs, want("a", 0, 100)...)
			}
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs()[1100:], wantLogs) })
			stays(t, 200*time.Millisecond, func() error {
				if n := h.e.count() - 1100; n != len(wantLogs) {
					return fmt.Errorf("%d lines delivered after the restart, want %d", n, len(wantLogs))
				}
				return nil
			})
			if a := h.asides(); len(a) != 1 {
				t.Errorf("set aside: %v", a)
			}
			h.stop()
			readFile = os.ReadFile
			if _, err := openStore(filepath.Dir(h.checkpointPath())); err != nil {
				t.Fatal(err)
			}
			if a := h.asides(); len(a) != 1 {
				t.Errorf("the file written after recovery is not good: %v set aside", a)
			}
		})
	}
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(errors.Join(err))
	}
}

// FuzzParseCheckpoints: whatever the file holds, parsing does not panic,
// a file with an error trusts only entries whose checksum is right, and
// a good file round-trips.
func FuzzParseCheckpoints(f *testing.F) {
	good := checkpointFile{Version: checkpointVersion, SavedAt: 1, Files: []checkpoint{
		{Dev: 1, Ino: 2, FPLen: 256, FP: 3, Offset: 4000, Path: "/a.log", TailLen: 256, TailFP: 5},
		{Dev: 1, Ino: 3, FPLen: 10, FP: 6, Offset: 10, Path: "/b.log", TailLen: 10, TailFP: 7},
	}}
	for i := range good.Files {
		good.Files[i].Sum = good.Files[i].checksum()
	}
	b, _ := json.MarshalIndent(&good, "", " ")
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte(`{"version":1,"files":[{"dev":1,"ino":2,"offset":3}]}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		files, _, trusted, err := parseCheckpoints(in)
		if len(trusted) != len(files) {
			t.Fatalf("%d entries, %d flags", len(files), len(trusted))
		}
		for i, c := range files {
			if trusted[i] && err != nil && c.Sum != c.checksum() {
				t.Fatalf("entry %d trusted in a damaged file without a right sum", i)
			}
		}
		if bytes.Equal(in, b) && (err != nil || len(files) != 2 || !trusted[0] || !trusted[1]) {
			t.Fatalf("good file: %v %v", err, trusted)
		}
	})
}
