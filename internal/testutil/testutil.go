// Package testutil holds the helpers the test files of several packages
// share: polling for a condition, finding and running Fluent Bit, a free
// port and reading a metric.
package testutil

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// CheckFor calls fn until it returns nil, for at most timeout; then it
// fails the test with fn's last error. fn is always called at least once
// and once more at the deadline. The pause between calls starts at a
// millisecond and doubles up to 20 ms, so that a condition that holds
// soon is seen soon and a slow one is not polled hard.
func CheckFor(tb testing.TB, timeout time.Duration, fn func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			tb.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// fluentBitBuildDir is where FLUENT-BIT.md's recipe builds Fluent Bit on
// the dev machines.
const fluentBitBuildDir = "/work/fb/build/bin/fluent-bit"

// FluentBit returns the path of a Fluent Bit binary: $FLUENT_BIT,
// fluent-bit on PATH, or the build directory of FLUENT-BIT.md's recipe.
// Without one it skips the test.
func FluentBit(tb testing.TB) string {
	tb.Helper()
	if p := findFluentBit(os.Getenv("FLUENT_BIT"), fluentBitBuildDir); p != "" {
		return p
	}
	tb.Skip("SKIP: fluent-bit not found (set FLUENT_BIT or put it on PATH; FLUENT-BIT.md says how to build it)")
	return ""
}

// StartFluentBit runs Fluent Bit (found as FluentBit finds it; without
// one the test is skipped) on config, the text of a YAML config file,
// until the test ends. Its output is logged if the test failed.
func StartFluentBit(tb testing.TB, config string) {
	tb.Helper()
	bin := FluentBit(tb)
	path := filepath.Join(tb.TempDir(), "fluent-bit.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-c", path)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if tb.Failed() {
			tb.Logf("fluent-bit output:\n%s", logs.String())
		}
	})
}

// findFluentBit is FluentBit's search: env if set, then PATH, then
// buildDir if it exists; "" if none.
func findFluentBit(env, buildDir string) string {
	if env != "" {
		return env
	}
	if p, err := exec.LookPath("fluent-bit"); err == nil {
		return p
	}
	if _, err := os.Stat(buildDir); err == nil {
		return buildDir
	}
	return ""
}

// FreeAddr returns a loopback address nothing listens on right now.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Value sums every sample of a collector: a counter's or gauge's value,
// a histogram's sample count, over all the series of a vector.
func Value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var d dto.Metric
		_ = m.Write(&d)
		switch {
		case d.Counter != nil:
			sum += d.Counter.GetValue()
		case d.Gauge != nil:
			sum += d.Gauge.GetValue()
		case d.Histogram != nil:
			sum += float64(d.Histogram.GetSampleCount())
		}
	}
	return sum
}
