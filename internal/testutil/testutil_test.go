package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fatalTB records a Fatalf and ends the goroutine as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFake runs CheckFor with a fake TB; it returns the failure message,
// "" if CheckFor returned.
func runFake(timeout time.Duration, fn func() error) string {
	f := &fatalTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		CheckFor(f, timeout, fn)
	}()
	<-done
	return f.msg
}

func TestCheckForPollsUntilNil(t *testing.T) {
	calls := 0
	if msg := runFake(time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); msg != "" {
		t.Fatalf("failed: %s", msg)
	}
	if calls != 3 {
		t.Fatalf("%d calls, want 3", calls)
	}
}

func TestCheckForFailsWithLastError(t *testing.T) {
	calls := 0
	msg := runFake(30*time.Millisecond, func() error {
		calls++
		return fmt.Errorf("attempt %d", calls)
	})
	if want := fmt.Sprintf("attempt %d", calls); !strings.Contains(msg, want) {
		t.Fatalf("message %q does not name the last error %q", msg, want)
	}
	if calls < 2 {
		t.Fatalf("%d calls in 30ms", calls)
	}
}

func TestCheckForZeroTimeoutCallsOnce(t *testing.T) {
	calls := 0
	msg := runFake(0, func() error { calls++; return errors.New("no") })
	if calls != 1 || !strings.Contains(msg, "no") {
		t.Fatalf("calls %d, message %q", calls, msg)
	}
}

func TestFindFluentBit(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no fluent-bit on PATH
	build := filepath.Join(t.TempDir(), "fluent-bit")
	if got := findFluentBit("/from/env", build); got != "/from/env" {
		t.Fatalf("env: got %q", got)
	}
	if got := findFluentBit("", build); got != "" {
		t.Fatalf("nothing there: got %q", got)
	}
	if err := os.WriteFile(build, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := findFluentBit("", build); got != build {
		t.Fatalf("build dir: got %q", got)
	}
}

func TestFreeAddr(t *testing.T) {
	ln, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
}

func TestValue(t *testing.T) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"k"})
	c.WithLabelValues("a").Add(2)
	c.WithLabelValues("b").Add(3)
	if v := Value(c); v != 5 {
		t.Fatalf("counter vec: %v", v)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	g.Set(-1.5)
	if v := Value(g); v != -1.5 {
		t.Fatalf("gauge: %v", v)
	}
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h"})
	h.Observe(1)
	h.Observe(2)
	if v := Value(h); v != 2 {
		t.Fatalf("histogram: %v", v)
	}
}

// TestStartFluentBit runs a stand-in for Fluent Bit that copies its
// config and then waits to be killed when the test ends.
func TestStartFluentBit(t *testing.T) {
	dir := t.TempDir()
	seen := filepath.Join(dir, "seen.yaml")
	fake := filepath.Join(dir, "fluent-bit")
	script := "#!/bin/sh\n[ \"$1\" = -c ] || exit 2\ncp \"$2\" " + seen + ".tmp && mv " + seen + ".tmp " + seen + "\nexec sleep 60\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLUENT_BIT", fake)
	t.Run("run", func(t *testing.T) {
		StartFluentBit(t, "service:\n  flush: 1\n")
		CheckFor(t, 10*time.Second, func() error {
			b, err := os.ReadFile(seen)
			if err != nil {
				return err
			}
			if string(b) != "service:\n  flush: 1\n" {
				return fmt.Errorf("config %q", b)
			}
			return nil
		})
	})
	// The subtest's cleanup killed and waited for it (goleak checks the
	// goroutines that copied its output are gone).
}
