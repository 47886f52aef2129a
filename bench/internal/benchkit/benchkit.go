// Package benchkit holds what the bench programs share: a counting forward
// receiver, the load's chunk, the CPU time of a process from /proc, and
// the launching of a logship or Fluent Bit process under test.
package benchkit

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/input/forward"
)

// Receiver is the far end of a relay under test: a forward input whose
// emitter counts the events and acknowledges every chunk at once.
type Receiver struct {
	n  atomic.Int64
	in *forward.Input
}

// Emit implements pipeline.Emitter.
func (r *Receiver) Emit(_ context.Context, ch pipeline.Chunk, ack pipeline.AckFunc) error {
	r.n.Add(int64(ch.Count))
	ack(nil)
	return nil
}

// Count is the number of events received so far (resent chunks included).
func (r *Receiver) Count() int64 { return r.n.Load() }

// Addr is the receiver's listening address.
func (r *Receiver) Addr() string { return r.in.Addr().String() }

// Stop closes the receiver.
func (r *Receiver) Stop() { _ = r.in.Stop(context.Background()) }

// StartReceiver starts a counting receiver on a free port of 127.0.0.1.
func StartReceiver() (*Receiver, error) {
	r := &Receiver{}
	// The input's defaults (its limits grow new fields, and their bounds
	// depend on each other), without the dedup journal.
	cfg := forward.Factory().NewConfig().(*forward.Config)
	cfg.Listen = "127.0.0.1:0"
	cfg.Dedup = false
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("receiver config: %w", err)
	}
	set := pipeline.Settings{Name: "receiver", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "receiver")}
	in, err := forward.New(set, cfg)
	if err != nil {
		return nil, err
	}
	if err := in.Start(context.Background(), r); err != nil {
		return nil, err
	}
	r.in = in
	return r, nil
}

// WaitCount waits until the receiver has counted at least want events
// (since it started) or the timeout passes.
func (r *Receiver) WaitCount(want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for r.Count() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("receiver counted %d of %d events after %s", r.Count(), want, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// MakeChunk returns the entries of a PackedForward chunk: n events of
// about size bytes each, a container log line with a few fields.
func MakeChunk(n, size int) []byte {
	var entries []byte
	pad := strings.Repeat("x", max(0, size-120))
	for i := range n {
		var rec []byte
		rec = mpack.AppendMapHeader(rec, 4)
		rec = mpack.AppendString(rec, "log")
		rec = mpack.AppendString(rec, "2026-11-22T10:00:00Z INFO request served path=/api/v1/items status=200 "+pad)
		rec = mpack.AppendString(rec, "stream")
		rec = mpack.AppendString(rec, "stdout")
		rec = mpack.AppendString(rec, "seq")
		rec = mpack.AppendInt(rec, int64(i))
		rec = mpack.AppendString(rec, "host")
		rec = mpack.AppendString(rec, "node-1")
		entries = mpack.AppendEntry(entries, mpack.Now(), rec)
	}
	return entries
}

// FreeAddr returns a TCP address of 127.0.0.1 that was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitListening waits until addr accepts TCP connections.
func WaitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CPUTime is the user+system CPU time of a process (utime+stime of
// /proc/PID/stat, in clock ticks of 10 ms).
func CPUTime(pid int) (time.Duration, error) {
	u, s, err := CPUTimes(pid)
	return u + s, err
}

// CPUTimes is the user and the system CPU time of a process.
func CPUTimes(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clkTck = 100
	return time.Duration(utime) * time.Second / clkTck, time.Duration(stime) * time.Second / clkTck, nil
}

// Proc is a process under test.
type Proc struct {
	Cmd *exec.Cmd
	// stop ends the process; graceful is used first when set.
	graceful bool
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Stop ends the process: SIGINT first for logship (so that it shuts down
// cleanly and writes a LOGSHIP_CPUPROFILE), SIGKILL after 10s or at once
// for Fluent Bit.
func (p *Proc) Stop() {
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	if p.graceful {
		_ = p.Cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
			return
		case <-time.After(10 * time.Second):
		}
	}
	_ = p.Cmd.Process.Kill()
	<-done
}

// Logship describes a logship agent to start.
type Logship struct {
	Bin    string // the binary, e.g. bin/logship
	Dir    string // holds the config and data_dir
	Listen string // the forward input's address
	// HTTPListen is service.http_listen; "" turns the server off.
	HTTPListen string
	// LogLevel is service.log_level; "" keeps the default (info).
	LogLevel string
	// Buffer is extra YAML under buffer: (each line "  key: value"); ""
	// keeps the binary's defaults.
	Buffer string
	// Input is extra YAML for the forward input (lines "    key: value").
	Input string
	// Output is the YAML of the outputs: list.
	Output string
	Stderr io.Writer
}

// ForwardOutput is the outputs: list of a forward output to addr with its
// defaults (require_ack: true; compress is set only when not "").
func ForwardOutput(addr, compress string) string {
	s := fmt.Sprintf("  - type: forward\n    servers: [%s]\n", addr)
	if compress != "" {
		s += fmt.Sprintf("    compress: %s\n", compress)
	}
	return s
}

// Start writes the config and starts the agent; it returns once the
// forward input listens.
func (l Logship) Start() (*Proc, error) {
	cfg := fmt.Sprintf("service:\n  data_dir: %s\n  http_listen: %q\n", filepath.Join(l.Dir, "data"), l.HTTPListen)
	if l.LogLevel != "" {
		cfg += fmt.Sprintf("  log_level: %s\n", l.LogLevel)
	}
	if l.Buffer != "" {
		cfg += "buffer:\n" + l.Buffer
	}
	cfg += fmt.Sprintf("inputs:\n  - type: forward\n    listen: %s\n%s", l.Listen, l.Input)
	cfg += "outputs:\n" + l.Output
	path := filepath.Join(l.Dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(l.Bin, "agent", "-c", path)
	cmd.Stdout = l.Stderr
	cmd.Stderr = l.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, graceful: true}
	if err := WaitListening(l.Listen, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// FluentBitPath returns the fluent-bit binary to use: flag when set
// ("none" turns Fluent Bit off), else $FLUENT_BIT, else fluent-bit on PATH;
// "" when there is none.
func FluentBitPath(flag string) string {
	switch flag {
	case "none":
		return ""
	case "":
	default:
		return flag
	}
	if p := os.Getenv("FLUENT_BIT"); p != "" {
		return p
	}
	p, err := exec.LookPath("fluent-bit")
	if err != nil {
		return ""
	}
	return p
}

// FluentBit describes a Fluent Bit relay to start: in_forward ->
// filesystem storage (storage.sync normal: no fsync) -> out_forward with
// require_ack_response to Recv.
type FluentBit struct {
	Bin    string
	Dir    string
	Listen string // in_forward's address
	Recv   string // out_forward's destination
	Stderr io.Writer
}

// Start writes the config and starts Fluent Bit; it returns once
// in_forward listens.
func (f FluentBit) Start() (*Proc, error) {
	lh, lp, _ := net.SplitHostPort(f.Listen)
	rh, rp, _ := net.SplitHostPort(f.Recv)
	cfg := fmt.Sprintf(`[SERVICE]
    flush        1
    log_level    warn
    storage.path %s
    storage.sync normal
[INPUT]
    name          forward
    listen        %s
    port          %s
    storage.type  filesystem
[OUTPUT]
    name          forward
    match         *
    host          %s
    port          %s
    require_ack_response true
`, filepath.Join(f.Dir, "storage"), lh, lp, rh, rp)
	path := filepath.Join(f.Dir, "fluent-bit.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(f.Bin, "-c", path)
	cmd.Stdout = f.Stderr
	cmd.Stderr = f.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd}
	if err := WaitListening(f.Listen, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Percentile returns the p-th percentile (0..100, nearest rank) of sorted
// durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// SortDurations sorts d in place and returns it.
func SortDurations(d []time.Duration) []time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d
}
