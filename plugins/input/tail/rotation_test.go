package tail

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
)

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeTo(t testing.TB, f *os.File, s string) {
	t.Helper()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) tracked(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	h.in.mu.Lock()
	defer h.in.mu.Unlock()
	_, ok := h.in.files[fileKeyOf(fi)]
	return ok
}

func (h *harness) waitTracked(path string) {
	h.t.Helper()
	testutil.CheckFor(h.t, 5*time.Second, func() error {
		if !h.tracked(path) {
			return fmt.Errorf("%s not followed yet", path)
		}
		return nil
	})
}

// TestRotateRenameCreate: logrotate's default. The writer keeps writing to
// the renamed file for a while (it has not reopened yet) while new lines go
// to the new file: everything is read once.
func TestRotateRenameCreate(t *testing.T) {
	for _, matched := range []bool{false, true} {
		t.Run(fmt.Sprintf("rotated_name_matched=%v", matched), func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				c.RotateWait = conftypes.Duration(time.Second)
				if matched {
					c.Paths = []string{filepath.Join(filepath.Dir(c.Paths[0]), "*.log*")}
				}
			})
			old, err := os.OpenFile(h.path("a.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			writeTo(t, old, lines("old", 0, 100))
			h.start()
			writeTo(t, old, lines("old", 100, 200))
			if err := os.Rename(h.path("a.log"), h.path("a.log.1")); err != nil {
				t.Fatal(err)
			}
			appendFile(t, h.path("a.log"), lines("new", 0, 100))
			writeTo(t, old, lines("old", 200, 300)) // the writer has not reopened yet
			appendFile(t, h.path("a.log"), lines("new", 100, 200))
			wantL := append(want("old", 0, 300), want("new", 0, 200)...)
			testutil.CheckFor(t, 10*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })
			for _, p := range []string{"old", "new"} {
				if err := inOrder(h.e.logs(), p); err != nil {
					t.Error(err)
				}
			}
			if !matched {
				// The rotated file is closed after rotate_wait and forgotten.
				testutil.CheckFor(t, 5*time.Second, func() error {
					if n := testutil.Value(h.in.met.open); n != 1 {
						return fmt.Errorf("%v files open", n)
					}
					if n := len(h.in.store.keys()); n != 1 {
						return fmt.Errorf("%d checkpoints", n)
					}
					return nil
				})
			}
		})
	}
}

// TestCopyTruncate: logrotate's copytruncate. The copy is known by its
// fingerprint: what the original had read is not read again from it, what
// it had not read is, and lines written to both files afterwards are read.
func TestCopyTruncate(t *testing.T) {
	for _, c := range []struct {
		name        string
		copyMatched bool
		readFirst   bool // the original was read to its end before the rotation
	}{
		{"copy_matched_read", true, true},
		{"copy_matched_unread", true, false},
		{"copy_unmatched_read", false, true},
		{"copy_unmatched_unread", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(cfg *Config) {
				cfg.Batch.MaxEvents = 10
				if c.copyMatched {
					cfg.Paths = []string{filepath.Join(filepath.Dir(cfg.Paths[0]), "*.log*")}
				}
			})
			appendFile(t, h.path("a.log"), lines("a", 0, 100))
			if !c.readFirst {
				h.e.block = make(chan struct{}) // the reader is stuck mid-file
			}
			h.start()
			if c.readFirst {
				testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 100)) })
			}
			appendFile(t, h.path("a.log"), lines("a", 100, 150))
			copyFile(t, h.path("a.log"), h.path("a.log.1"))
			if err := os.Truncate(h.path("a.log"), 0); err != nil {
				t.Fatal(err)
			}
			appendFile(t, h.path("a.log"), lines("b", 0, 50))
			appendFile(t, h.path("a.log.1"), lines("c", 0, 20)) // written to both
			if !c.readFirst {
				h.e.mu.Lock()
				close(h.e.block)
				h.e.block = nil
				h.e.mu.Unlock()
			}
			wantL := append(append(want("a", 0, 150), want("b", 0, 50)...), want("c", 0, 20)...)
			if !c.copyMatched {
				// An unmatched copy is drained, not followed: lines written
				// to it later are read only while it is drained.
				wantL = append(want("a", 0, 150), want("b", 0, 50)...)
				testutil.CheckFor(t, 10*time.Second, func() error {
					got := h.e.logs()
					var kept []string
					for _, g := range got {
						if g[0] != 'c' {
							kept = append(kept, g)
						}
					}
					return exactlyOnce(kept, wantL)
				})
				return
			}
			testutil.CheckFor(t, 10*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })
		})
	}
}

// TestTruncateThenAppend: a file cut to 0 and written again is read from 0;
// written again beyond the old read position before the reader looks, it is
// still read from 0 (its first bytes changed).
func TestTruncateThenAppend(t *testing.T) {
	for _, longer := range []bool{false, true} {
		t.Run(fmt.Sprintf("longer=%v", longer), func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.RefreshInterval = conftypes.Duration(300 * time.Millisecond) })
			appendFile(t, h.path("a.log"), lines("a", 0, 20))
			h.start()
			testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 20)) })
			n := 5
			if longer {
				n = 200
			}
			// Truncate and write in one go, through one descriptor.
			f, err := os.OpenFile(h.path("a.log"), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			writeTo(t, f, lines("b", 0, n))
			f.Close()
			testutil.CheckFor(t, 5*time.Second, func() error {
				return exactlyOnce(h.e.logs(), append(want("a", 0, 20), want("b", 0, n)...))
			})
		})
	}
}

// TestDeleteWhileOpen: a deleted file is read to its end through the open
// descriptor (and followed for rotate_wait) before it is closed.
func TestDeleteWhileOpen(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RotateWait = conftypes.Duration(500 * time.Millisecond) })
	w, err := os.OpenFile(h.path("a.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writeTo(t, w, lines("a", 0, 10))
	h.start()
	h.waitTracked(h.path("a.log"))
	writeTo(t, w, lines("a", 10, 20))
	if err := os.Remove(h.path("a.log")); err != nil {
		t.Fatal(err)
	}
	writeTo(t, w, lines("a", 20, 30))
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 30)) })
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := testutil.Value(h.in.met.open); n != 0 {
			return fmt.Errorf("%v files open", n)
		}
		if n := len(h.in.store.keys()); n != 0 {
			return fmt.Errorf("%d checkpoints left", n)
		}
		return nil
	})
}

// TestFileReappears: deleted and created again under its name, a file is
// a new file, read from its head.
func TestFileReappears(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReadFromHead = false })
	appendFile(t, h.path("a.log"), lines("ignored", 0, 5))
	h.start()
	appendFile(t, h.path("a.log"), lines("a", 0, 5))
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 5)) })
	if err := os.Remove(h.path("a.log")); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := testutil.Value(h.in.met.open); n != 0 {
			return fmt.Errorf("%v files open", n)
		}
		return nil
	})
	appendFile(t, h.path("a.log"), lines("b", 0, 5))
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("a", 0, 5), want("b", 0, 5)...))
	})
}

// TestRotatedWhileStopped: rotated by rename while logship was stopped,
// the old file's unread tail is found by inode and read; the new file is
// read from its head.
func TestRotatedWhileStopped(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ReadFromHead = false })
	appendFile(t, h.path("a.log"), lines("pre", 0, 5))
	h.start()
	appendFile(t, h.path("a.log"), lines("a", 0, 10))
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 10)) })
	h.stop()
	appendFile(t, h.path("a.log"), lines("a", 10, 20))
	if err := os.Rename(h.path("a.log"), h.path("a.log.1")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, h.path("a.log"), lines("b", 0, 10))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("a", 0, 20), want("b", 0, 10)...))
	})
	// The drained file is closed and its checkpoint dropped.
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := len(h.in.store.keys()); n != 1 {
			return fmt.Errorf("%d checkpoints", n)
		}
		return nil
	})
}

// TestCopyTruncatedWhileStopped: copytruncate while logship was stopped;
// the unread tail is read from the copy, the original from 0. (The
// file is longer than the fingerprint: shorter copies cannot be told.)
func TestCopyTruncatedWhileStopped(t *testing.T) {
	h := newHarness(t, nil)
	appendFile(t, h.path("a.log"), lines("a", 0, 40))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 40)) })
	h.stop()
	appendFile(t, h.path("a.log"), lines("a", 40, 50))
	copyFile(t, h.path("a.log"), h.path("a.log.1"))
	if err := os.Truncate(h.path("a.log"), 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, h.path("a.log"), lines("b", 0, 10))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("a", 0, 50), want("b", 0, 10)...))
	})
}

// TestSymlinkedContainerLogs: the Kubernetes layout, where
// /var/log/containers/*.log are links to files kubelet rotates by rename.
func TestSymlinkedContainerLogs(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Format = FormatCRI; c.Tag = "kube.*" })
	pods := t.TempDir()
	target := filepath.Join(pods, "0.log")
	link := h.path("pod_ns_c-123.log")
	ts := "2024-01-01T00:00:00.000000001Z"
	cri := func(prefix string, from, to int) string {
		var s string
		for _, l := range want(prefix, from, to) {
			s += ts + " stdout F " + l + "\n"
		}
		return s
	}
	appendFile(t, target, cri("a", 0, 10))
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 10)) })
	appendFile(t, target, cri("a", 10, 20)) // notified through the target's directory
	if err := os.Rename(target, filepath.Join(pods, "0.log.20240101")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, target, cri("b", 0, 10))
	testutil.CheckFor(t, 5*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("a", 0, 20), want("b", 0, 10)...))
	})
	for _, r := range h.e.records() {
		if r.tag != expandTag("kube.*", link) {
			t.Fatalf("tag %q", r.tag)
		}
	}
}

// TestNotifiedQuickly: with inotify, a write is read long before the next
// poll.
func TestNotifiedQuickly(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RefreshInterval = conftypes.Duration(time.Hour) })
	appendFile(t, h.path("a.log"), lines("a", 0, 1))
	h.start()
	if h.in.watcher == nil {
		t.Skip("SKIP: inotify unavailable here")
	}
	testutil.CheckFor(t, 2*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 1)) })
	appendFile(t, h.path("a.log"), lines("a", 1, 2))
	appendFile(t, h.path("b.log"), lines("b", 0, 1)) // a new file: found through the directory watch
	testutil.CheckFor(t, 2*time.Second, func() error {
		return exactlyOnce(h.e.logs(), append(want("a", 0, 2), want("b", 0, 1)...))
	})
}

// TestCopyFoundBeforeTruncation: copytruncate's copy is found while its
// original is still whole; it waits, and once the original is truncated it
// resumes where the original stopped (here: nothing left to read).
func TestCopyFoundBeforeTruncation(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Paths = []string{filepath.Join(filepath.Dir(c.Paths[0]), "*.log*")}
		c.RefreshInterval = conftypes.Duration(200 * time.Millisecond) // a copy waits 3 scans at most
	})
	appendFile(t, h.path("a.log"), lines("a", 0, 40))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 40)) })
	copyFile(t, h.path("a.log"), h.path("a.log.1"))
	h.waitTracked(h.path("a.log.1"))
	appendFile(t, h.path("a.log"), lines("a", 40, 50)) // only in the original
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 50)) })
	if err := os.Truncate(h.path("a.log"), 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, h.path("a.log"), lines("b", 0, 5))
	appendFile(t, h.path("a.log.1"), lines("c", 0, 5))
	wantL := append(append(want("a", 0, 50), want("b", 0, 5)...), want("c", 0, 5)...)
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), wantL) })
	stays(t, 300*time.Millisecond, func() error { return exactlyOnce(h.e.logs(), wantL) })
}

// TestPlainCopyIsRead: a copy of a live file that is never truncated is a
// file of its own (a backup the paths match): read in full once the wait
// for a truncation is over.
func TestPlainCopyIsRead(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Paths = []string{filepath.Join(filepath.Dir(c.Paths[0]), "*")}
		c.RefreshInterval = conftypes.Duration(100 * time.Millisecond)
	})
	appendFile(t, h.path("a.log"), lines("a", 0, 40))
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error { return exactlyOnce(h.e.logs(), want("a", 0, 40)) })
	copyFile(t, h.path("a.log"), h.path("backup"))
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.count(); n != 80 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	got := h.e.logs()
	if err := exactlyOnce(got[:40], want("a", 0, 40)); err != nil {
		t.Error(err)
	}
	if err := exactlyOnce(got[40:], want("a", 0, 40)); err != nil {
		t.Errorf("the copy: %v", err)
	}
}
