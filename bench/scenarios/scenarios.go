package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/bench/internal/benchkit"
)

func defaultSync() string { return agent.Role.Config().Buffer.Sync.String() }

// addrs returns n TCP addresses of 127.0.0.1 that were free a moment ago.
func addrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		a, err := benchkit.FreeAddr()
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

func writeConfig(path, text string) error { return os.WriteFile(path, []byte(text), 0o644) }

// startLogship starts a logship process of role on the config text, its
// output going to the run's log file name.
func (e *env) startLogship(role, name, path, text string, ready func() error) (*benchkit.Proc, error) {
	if err := writeConfig(path, text); err != nil {
		return nil, err
	}
	w, err := e.logFile(name)
	if err != nil {
		return nil, err
	}
	return benchkit.Command{Bin: *bin, Role: role, Config: path, Ready: ready, Stderr: w}.Start()
}

// startFluentBit starts Fluent Bit on the config text.
func (e *env) startFluentBit(name, path, text string, ready func() error) (*benchkit.Proc, error) {
	if err := writeConfig(path, text); err != nil {
		return nil, err
	}
	w, err := e.logFile(name)
	if err != nil {
		return nil, err
	}
	return benchkit.StartFluentBit(e.fbBin, path, ready, w)
}

// waitFor polls count every step until it reaches want or the timeout
// passes.
func waitFor(what string, want int64, step time.Duration, count func() (int64, error)) error {
	deadline := time.Now().Add(*timeout)
	for {
		n, err := count()
		if err != nil {
			return err
		}
		if n >= want {
			if n > want {
				fmt.Printf("  note: %s has %d events, %d more than sent (resent)\n", what, n, n-want)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has %d of %d events after %s", what, n, want, *timeout)
		}
		time.Sleep(step)
	}
}

// measure runs load with the meter's processes measured from its start
// until done returns; the processes are stopped afterwards.
func measure(m *meter, load func() error, done func() error) (elapsed time.Duration, procs []procResult, err error) {
	time.Sleep(settleDelay)
	if err := m.begin(); err != nil {
		return 0, nil, err
	}
	// This process too (senders, receiver, kfake), for what it took from
	// the same two cores.
	self := &proc{role: "harness", name: "this", pid: os.Getpid()}
	if self.u0, err = benchkit.ReadUsage(self.pid); err != nil {
		return 0, nil, err
	}
	t0 := time.Now()
	if err := load(); err != nil {
		return 0, nil, err
	}
	if err := done(); err != nil {
		return 0, nil, err
	}
	elapsed = time.Since(t0)
	m.procs = append(m.procs, self)
	defer func() { m.procs = m.procs[:len(m.procs)-1] }()
	procs, err = m.end()
	return elapsed, procs, err
}

// runA: a generator appends -events lines to a file as fast as it can; an
// agent (logship, or Fluent Bit) tails it and forwards to a logship
// aggregator that writes every event to one file; done when that file has
// every line.
func runA(e *env, target string) (result, error) {
	dir := filepath.Join(e.work, "a-"+target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	a, err := addrs(4)
	if err != nil {
		return result{}, err
	}
	aggFwd, aggHTTP, agentHTTP := a[0], a[1], a[2]
	aggDir := filepath.Join(e.agg, "a-"+target)
	out := filepath.Join(aggDir, "out", "all.log")
	var m meter
	defer m.stop()
	agg, err := e.startLogship("aggregator", "a-"+target+"-aggregator", filepath.Join(dir, "aggregator.yaml"), fmt.Sprintf(`service:
  data_dir: %s
  http_listen: %s
inputs:
  - type: forward
    listen: %s
outputs:
  - type: file
    path: %s
`, filepath.Join(aggDir, "aggregator-data"), aggHTTP, aggFwd, out), benchkit.Listening(aggFwd))
	if err != nil {
		return result{}, err
	}
	m.add("aggregator", "logship", agg)

	// The file exists (empty) before the agent starts, and both agents read
	// it from its head: nothing depends on when they first look at it.
	logPath := filepath.Join(dir, "app.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		return result{}, err
	}
	var ag *benchkit.Proc
	switch target {
	case "logship":
		ag, err = e.startLogship("agent", "a-logship-agent", filepath.Join(dir, "agent.yaml"), fmt.Sprintf(`service:
  data_dir: %s
  http_listen: %s
inputs:
  - type: tail
    paths: [%s]
    read_from_head: true
outputs:
  - type: forward
    servers: [%s]
`, filepath.Join(dir, "agent-data"), agentHTTP, logPath, aggFwd), benchkit.HTTPReady("http://"+agentHTTP+"/readyz"))
	default:
		h, p := splitHostPort(aggFwd)
		hh, hp := splitHostPort(agentHTTP)
		ag, err = e.startFluentBit("a-fluent-bit", filepath.Join(dir, "fluent-bit.conf"), fmt.Sprintf(`[SERVICE]
    flush        1
    log_level    warn
    storage.path %s
    storage.sync normal
    http_server  on
    http_listen  %s
    http_port    %s
[INPUT]
    name           tail
    path           %s
    tag            app.log
    read_from_head true
    storage.type   filesystem
[OUTPUT]
    name                 forward
    match                *
    host                 %s
    port                 %s
    require_ack_response true
`, filepath.Join(dir, "fb-storage"), hh, hp, logPath, h, p), benchkit.HTTPReady("http://"+agentHTTP+"/"))
	}
	if err != nil {
		return result{}, err
	}
	m.add("agent", target, ag)

	n := int64(*events)
	lc := &benchkit.LineCounter{Path: out}
	elapsed, procs, err := measure(&m,
		func() error { return generate(logPath, n, *eventSize, *lineRate) },
		func() error { return waitFor("the aggregator's file", n, 5*time.Millisecond, lc.Count) })
	if err != nil {
		return result{}, err
	}
	return result{events: n, bytes: n * int64(*eventSize), elapsed: elapsed, procs: procs}, nil
}

// generate appends n lines of size bytes (newline included) to path, as
// fast as it can (1 MiB writes), or rate lines a second (rate > 0: each
// 10ms' lines in one write).
func generate(path string, n int64, size, rate int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	start := time.Now()
	pad := strings.Repeat("x", max(0, size-100))
	line := make([]byte, 0, size+64)
	for i := range n {
		line = append(line[:0], "2026-11-22T10:00:00.000Z INFO request served path=/api/v1/items status=200 seq="...)
		line = strconv.AppendInt(line, i, 10)
		line = append(line, ' ')
		line = append(line, pad...)
		for len(line) < size-1 {
			line = append(line, 'y')
		}
		line = append(line[:size-1], '\n')
		if _, err := w.Write(line); err != nil {
			_ = f.Close()
			return err
		}
		if step := int64(max(rate/100, 1)); rate > 0 && (i+1)%step == 0 {
			if err := w.Flush(); err != nil {
				_ = f.Close()
				return err
			}
			time.Sleep(time.Until(start.Add(time.Duration((i+1)/step) * 10 * time.Millisecond)))
		}
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func splitHostPort(a string) (string, string) {
	i := strings.LastIndexByte(a, ':')
	return a[:i], a[i+1:]
}

// startForwardAgent starts the agent of (b) and (c): logship's forward
// input with its defaults and the given outputs, or Fluent Bit's
// in_forward with filesystem storage and the given [OUTPUT] section.
func (e *env) startForwardAgent(scen, target, dir, lsOutputs, fbOutput string) (*benchkit.Proc, string, error) {
	a, err := addrs(2)
	if err != nil {
		return nil, "", err
	}
	listen, httpAddr := a[0], a[1]
	if target == "logship" {
		p, err := e.startLogship("agent", scen+"-logship-agent", filepath.Join(dir, "agent.yaml"), fmt.Sprintf(`service:
  data_dir: %s
  http_listen: %s
inputs:
  - type: forward
    listen: %s
outputs:
%s`, filepath.Join(dir, "agent-data"), httpAddr, listen, lsOutputs), benchkit.Listening(listen))
		return p, listen, err
	}
	h, port := splitHostPort(listen)
	p, err := e.startFluentBit(scen+"-fluent-bit", filepath.Join(dir, "fluent-bit.conf"), fmt.Sprintf(`[SERVICE]
    flush        1
    log_level    warn
    storage.path %s
    storage.sync normal
[INPUT]
    name          forward
    listen        %s
    port          %s
    storage.type  filesystem
%s`, filepath.Join(dir, "fb-storage"), h, port, fbOutput), benchkit.Listening(listen))
	return p, listen, err
}

// sendLoad sends -events (rounded down to whole chunks) to addr with the
// synchronous senders and returns the ack latencies' summary.
func sendLoad(addr, tag string, entries []byte) (int64, func() error, *string) {
	chunks := int64(*events / *perChunk)
	var extra string
	return chunks * int64(*perChunk), func() error {
		lat, err := benchkit.SendChunks(addr, *conns, tag, entries, *perChunk, chunks)
		if len(lat) > 0 {
			extra = fmt.Sprintf("ack p50 %s p99 %s (%d conns x %d-event chunks)", ms(benchkit.Percentile(lat, 50)), ms(benchkit.Percentile(lat, 99)), *conns, *perChunk)
		}
		return err
	}, &extra
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1e3) }

// runB: synchronous forward senders -> agent -> forward output (logship's
// defaults; Fluent Bit's with require_ack_response) -> a counting
// receiver in this process; done when the receiver has every event.
func runB(e *env, target string) (result, error) {
	dir := filepath.Join(e.work, "b-"+target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	recv, err := benchkit.StartReceiver()
	if err != nil {
		return result{}, err
	}
	defer recv.Stop()
	h, p := splitHostPort(recv.Addr())
	var m meter
	defer m.stop()
	ag, listen, err := e.startForwardAgent("b", target, dir, benchkit.ForwardOutput(recv.Addr(), ""), fmt.Sprintf(`[OUTPUT]
    name                 forward
    match                *
    host                 %s
    port                 %s
    require_ack_response true
`, h, p))
	if err != nil {
		return result{}, err
	}
	m.add("agent", target, ag)
	entries := benchkit.MakeChunk(*perChunk, *eventSize)
	n, load, extra := sendLoad(listen, "bench.b.", entries)
	elapsed, procs, err := measure(&m, load,
		func() error {
			return waitFor("the receiver", n, 2*time.Millisecond, func() (int64, error) { return recv.Count(), nil })
		})
	if err != nil {
		return result{}, err
	}
	return result{events: n, bytes: n / int64(*perChunk) * int64(len(entries)), elapsed: elapsed, procs: procs, extra: *extra}, nil
}

// runC: synchronous forward senders -> agent -> kafka output (logship's
// defaults; Fluent Bit's out_kafka with librdkafka's) -> a kfake cluster
// of three brokers in this process; done when the topic's end offsets add
// up to every event.
func runC(e *env, target string) (result, error) {
	dir := filepath.Join(e.work, "c-"+target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	const topic = "logs"
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(int32(*partitions), topic))
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	inKafka := func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		offs, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0, err
		}
		var sum int64
		offs.Each(func(o kadm.ListedOffset) { sum += o.Offset })
		return sum, nil
	}

	var m meter
	defer m.stop()
	ag, listen, err := e.startForwardAgent("c", target, dir, fmt.Sprintf("  - type: kafka\n    brokers: [%s]\n    topic: %s\n", strings.Join(brokers, ", "), topic), fmt.Sprintf(`[OUTPUT]
    name     kafka
    match    *
    brokers  %s
    topics   %s
`, strings.Join(brokers, ","), topic))
	if err != nil {
		return result{}, err
	}
	m.add("agent", target, ag)
	entries := benchkit.MakeChunk(*perChunk, *eventSize)
	n, load, extra := sendLoad(listen, "bench.c.", entries)
	elapsed, procs, err := measure(&m, load, func() error { return waitFor("kafka", n, 20*time.Millisecond, inKafka) })
	if err != nil {
		return result{}, err
	}
	return result{events: n, bytes: n / int64(*perChunk) * int64(len(entries)), elapsed: elapsed, procs: procs, extra: *extra}, nil
}
