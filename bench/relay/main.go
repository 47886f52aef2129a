// Command relay measures a whole logship process as a forward relay:
//
//	load generator --forward, acks--> logship agent --forward, acks--> counting receiver
//	                                  (forward in -> buffer -> forward out)
//
// It reports events/s, MB/s and the relay process's CPU time per event
// (user+system from /proc), the figure that matters on shared, noisy
// 2-core machines. With -fluent-bit PATH it runs Fluent Bit on the same
// load in the same run (filesystem storage, acks on both sides) and prints
// the ratio.
//
//	go run ./bench/relay -events 2000000
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	"github.com/logship/logship/plugins/input/forward"
)

var (
	events    = flag.Int("events", 2_000_000, "events to send")
	chunk     = flag.Int("chunk", 1000, "events per PackedForward chunk")
	eventSize = flag.Int("size", 200, "bytes per event (approximately)")
	conns     = flag.Int("conns", 4, "load generator connections")
	inflight  = flag.Int("inflight", 8, "unacked chunks per connection")
	bin       = flag.String("logship", "bin/logship", "the logship binary")
	fluentBit = flag.String("fluent-bit", "", "a fluent-bit binary to measure on the same load (optional)")
	syncMode  = flag.String("sync", "interval", "buffer.sync of the relay")
	compress  = flag.String("compress", "none", "the relay's forward output compression")
)

// counter is the receiving end: a forward input whose emitter counts and
// acks at once.
type counter struct{ n atomic.Int64 }

func (c *counter) Emit(_ context.Context, ch pipeline.Chunk, ack pipeline.AckFunc) error {
	c.n.Add(int64(ch.Count))
	ack(nil)
	return nil
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	recv := &counter{}
	cfg := &forward.Config{Listen: "127.0.0.1:0", MaxFrameBytes: 64 << 20, MaxDecompressedBytes: 256 << 20, MaxPendingAcks: 256}
	set := pipeline.Settings{Name: "receiver", Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "receiver")}
	in, err := forward.New(set, cfg)
	if err != nil {
		return err
	}
	if err := in.Start(context.Background(), recv); err != nil {
		return err
	}
	defer func() { _ = in.Stop(context.Background()) }()
	payload := makeChunk(*chunk, *eventSize)

	res, err := measureLogship(in.Addr().String(), recv, payload)
	if err != nil {
		return err
	}
	res.print("logship")
	if *fluentBit != "" {
		fb, err := measureFluentBit(in.Addr().String(), recv, payload)
		if err != nil {
			return err
		}
		fb.print("fluent-bit")
		fmt.Printf("ratio logship/fluent-bit: %.2fx events/s, %.2fx less CPU per event\n", res.rate()/fb.rate(), float64(fb.cpuPerEvent())/float64(res.cpuPerEvent()))
	}
	return nil
}

type result struct {
	events  int64
	bytes   int64
	elapsed time.Duration
	cpu     time.Duration
}

func (r result) rate() float64              { return float64(r.events) / r.elapsed.Seconds() }
func (r result) cpuPerEvent() time.Duration { return r.cpu / time.Duration(r.events) }
func (r result) print(name string) {
	fmt.Printf("%-10s %d events in %.2fs: %.0f events/s, %.1f MB/s, relay CPU %.2fs = %.3f us/event\n",
		name, r.events, r.elapsed.Seconds(), r.rate(), float64(r.bytes)/r.elapsed.Seconds()/1e6, r.cpu.Seconds(), float64(r.cpu.Nanoseconds())/float64(r.events)/1e3)
}

func makeChunk(n, size int) []byte {
	var entries []byte
	pad := strings.Repeat("x", max(0, size-120))
	for i := range n {
		var rec []byte
		rec = pipeline.AppendMapHeader(rec, 4)
		rec = pipeline.AppendString(rec, "log")
		rec = pipeline.AppendString(rec, "2026-11-22T10:00:00Z INFO request served path=/api/v1/items status=200 "+pad)
		rec = pipeline.AppendString(rec, "stream")
		rec = pipeline.AppendString(rec, "stdout")
		rec = pipeline.AppendString(rec, "seq")
		rec = pipeline.AppendInt(rec, int64(i))
		rec = pipeline.AppendString(rec, "host")
		rec = pipeline.AppendString(rec, "node-1")
		entries = pipeline.AppendEntry(entries, pipeline.Now(), rec)
	}
	return entries
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func measureLogship(recvAddr string, recv *counter, payload []byte) (result, error) {
	dir, err := os.MkdirTemp("", "logship-relay")
	if err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	listen, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	cfgPath := filepath.Join(dir, "relay.yaml")
	cfg := fmt.Sprintf(`
service:
  data_dir: %s
  http_listen: ""
  log_level: warn
buffer:
  partitions: 4
  max_bytes: 4GiB
  segment_bytes: 64MiB
  sync: %s
inputs:
  - type: forward
    listen: %s
    max_pending_acks: 256
outputs:
  - type: forward
    servers: [%s]
    compress: %s
    require_ack: true
`, filepath.Join(dir, "data"), *syncMode, listen, recvAddr, *compress)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return result{}, err
	}
	cmd := exec.Command(*bin, "agent", "-c", cfgPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		// SIGTERM, so that a LOGSHIP_CPUPROFILE is written.
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	return drive(listen, cmd.Process.Pid, recv, payload)
}

// drive sends the load to addr, waits until the receiver counted every
// event and returns the figures; pid is the relay whose CPU is measured.
func drive(addr string, pid int, recv *counter, payload []byte) (result, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("relay never listened on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	start0 := recv.n.Load()
	cpu0, err := cpuTime(pid)
	if err != nil {
		return result{}, err
	}
	chunks := *events / *chunk
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, *conns)
	t0 := time.Now()
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sendConn(addr, w, payload, &next, int64(chunks)); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return result{}, err
	default:
	}
	total := int64(chunks * *chunk)
	for recv.n.Load()-start0 < total {
		if time.Since(t0) > 10*time.Minute {
			return result{}, fmt.Errorf("receiver counted %d of %d", recv.n.Load()-start0, total)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return result{}, err
	}
	return result{events: total, bytes: int64(chunks) * int64(len(payload)), elapsed: elapsed, cpu: cpu1 - cpu0}, nil
}

func sendConn(addr string, w int, payload []byte, next *atomic.Int64, chunks int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	enc := forwardproto.NewEncoder()
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	sem := make(chan struct{}, *inflight)
	ackErr := make(chan error, 1)
	sent := 0
	var readers sync.WaitGroup
	acks := make(chan struct{}, 1<<16)
	readers.Add(1)
	go func() {
		defer readers.Done()
		for range acks {
			if _, err := dec.NextAck(); err != nil {
				ackErr <- err
				return
			}
			<-sem
		}
	}()
	var buf []byte
	for {
		i := next.Add(1) - 1
		if i >= chunks {
			break
		}
		sem <- struct{}{}
		buf, err = enc.AppendPackedForward(buf[:0], "bench.relay."+strconv.Itoa(w), payload, *chunk, fmt.Sprintf("c-%d-%d", w, i), forwardproto.CompressNone)
		if err != nil {
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
		acks <- struct{}{}
		sent++
	}
	close(acks)
	readers.Wait()
	select {
	case err := <-ackErr:
		return err
	default:
	}
	return nil
}

// cpuTime is the user+system CPU time of a process.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clkTck = 100
	return time.Duration(utime+stime) * time.Second / clkTck, nil
}

func measureFluentBit(recvAddr string, recv *counter, payload []byte) (result, error) {
	dir, err := os.MkdirTemp("", "fluent-bit-relay")
	if err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	listen, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	lh, lp, _ := net.SplitHostPort(listen)
	rh, rp, _ := net.SplitHostPort(recvAddr)
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
`, filepath.Join(dir, "storage"), lh, lp, rh, rp)
	cfgPath := filepath.Join(dir, "fluent-bit.conf")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return result{}, err
	}
	cmd := exec.Command(*fluentBit, "-c", cfgPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	return drive(listen, cmd.Process.Pid, recv, payload)
}
