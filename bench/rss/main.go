// Command rss measures the peak resident memory of a logship agent on its
// default config (a forward input, a tail input on a growing file, the
// default buffer, a forward output), in two situations:
//
//   - full load: -clients synchronous forward clients (each sends one
//     PackedForward chunk of -events events of -size bytes with a `chunk`
//     option and waits for its ack before the next, as fluent-logger-golang
//     with RequestAck does) while the agent ships to a counting receiver;
//   - backpressure: the same clients while the receiver is down: the buffer
//     fills up to its max_bytes (when_full: block), the clients stall, and
//     the agent is held there for -hold.
//
// Each situation runs a fresh agent. It prints the agent's peak VmHWM (from
// /proc/PID/status) and the peaks of the Go runtime's figures scraped from
// the agent's /metrics (go_memstats_*), sampled every 100ms.
//
// Usage:
//
//	go run ./bench/rss
//	go run ./bench/rss -clients 40 -duration 20s -hold 10s
//	LOGSHIP_MEMPROFILE=/tmp/heap.pprof go run ./bench/rss -only backpressure
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/logship/logship/bench/internal/benchkit"
	"github.com/logship/logship/plugins/forwardproto"
)

var (
	binFlag   = flag.String("logship", "", `the logship binary; "" builds ./cmd/logship into the work directory`)
	clients   = flag.Int("clients", 40, "synchronous forward clients")
	perChunk  = flag.Int("events", 1000, "events per chunk")
	eventSize = flag.Int("size", 200, "bytes per event (approximately)")
	duration  = flag.Duration("duration", 20*time.Second, "length of the full-load situation")
	hold      = flag.Duration("hold", 10*time.Second, "how long the backpressure situation is held once the clients stall")
	fillMax   = flag.Duration("fill-timeout", 3*time.Minute, "longest wait for the buffer to fill in the backpressure situation")
	maxBytes  = flag.String("max-bytes", "", `buffer.max_bytes; "" keeps the default`)
	tailRate  = flag.Int("tail-rate", 1000, "lines per second appended to the tailed file")
	inExtra   = flag.String("input", "", `extra settings of the forward input, "key: value" separated by ";" (default: none)`)
	outExtra  = flag.String("output", "", `extra settings of the forward output, "key: value" separated by ";" (default: none)`)
	svcExtra  = flag.String("service", "", `extra service settings, "key: value" separated by ";" (default: none)`)
	only      = flag.String("only", "", `run one situation only: "load" or "backpressure"`)
	dirFlag   = flag.String("dir", os.TempDir(), "directory for the agent's data_dir")
	quiet     = flag.Bool("q", true, "send the agent's log to /dev/null instead of stderr")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rss:", err)
		os.Exit(1)
	}
}

// result is what one situation measured.
type result struct {
	name    string
	hwm     int64 // VmHWM at the end, bytes
	rssEnd  int64 // VmRSS at the end
	acks    int64
	events  int64
	elapsed time.Duration
	peaks   map[string]float64 // highest value of each go_memstats figure
	note    string
}

// memstats are the Go runtime figures whose peaks are printed.
var memstats = []string{
	"go_memstats_heap_inuse_bytes",
	"go_memstats_heap_sys_bytes",
	"go_memstats_heap_released_bytes",
	"go_memstats_stack_inuse_bytes",
	"go_memstats_next_gc_bytes",
	"go_memstats_sys_bytes",
}

func run() error {
	work, err := os.MkdirTemp(*dirFlag, "logship-bench-rss")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()
	bin := *binFlag
	if bin == "" {
		bin = filepath.Join(work, "logship")
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/logship")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/logship: %w", err)
		}
	}
	logs := io.Writer(os.Stderr)
	if *quiet {
		logs = io.Discard
	}
	payload := benchkit.MakeChunk(*perChunk, *eventSize)
	if *inExtra+*outExtra+*svcExtra != "" {
		fmt.Printf("config: service {%s} forward input {%s} forward output {%s}\n", *svcExtra, *inExtra, *outExtra)
	}
	fmt.Printf("load: %d clients, chunks of %d events (%d B), one chunk in flight per client; agent default config + tail at %d lines/s\n",
		*clients, *perChunk, len(payload), *tailRate)
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		fmt.Printf("tree: %s\n", strings.TrimSpace(string(out)))
	}
	var res []result
	if *only == "" || *only == "load" {
		r, err := situation(bin, filepath.Join(work, "load"), payload, false, logs)
		if err != nil {
			return fmt.Errorf("full load: %w", err)
		}
		res = append(res, r)
	}
	if *only == "" || *only == "backpressure" {
		r, err := situation(bin, filepath.Join(work, "backpressure"), payload, true, logs)
		if err != nil {
			return fmt.Errorf("backpressure: %w", err)
		}
		res = append(res, r)
	}
	fmt.Printf("\n%-13s %10s %10s %10s %11s %10s %10s %10s %10s %10s\n", "situation", "VmHWM MiB", "VmRSS end", "events/s",
		"heap inuse", "heap sys", "heap rel.", "stack", "next_gc", "go sys")
	mib := func(v float64) string { return fmt.Sprintf("%.1f", v/(1<<20)) }
	for _, r := range res {
		fmt.Printf("%-13s %10s %10s %10.0f %11s %10s %10s %10s %10s %10s\n", r.name, mib(float64(r.hwm)), mib(float64(r.rssEnd)),
			float64(r.events)/r.elapsed.Seconds(), mib(r.peaks[memstats[0]]), mib(r.peaks[memstats[1]]), mib(r.peaks[memstats[2]]),
			mib(r.peaks[memstats[3]]), mib(r.peaks[memstats[4]]), mib(r.peaks[memstats[5]]))
	}
	fmt.Println("(VmHWM: the agent's peak resident set, the goal is <= 64 MiB; go_memstats columns: the highest value scraped from /metrics, MiB)")
	for _, r := range res {
		if r.note != "" {
			fmt.Printf("%s: %s\n", r.name, r.note)
		}
	}
	return nil
}

// situation runs a fresh agent under the load; down leaves its output's
// receiver down (backpressure).
func situation(bin, dir string, payload []byte, down bool, logs io.Writer) (result, error) {
	name := "full load"
	if down {
		name = "backpressure"
	}
	r := result{name: name, peaks: map[string]float64{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	var recv *benchkit.Receiver
	var recvAddr string
	if down {
		a, err := benchkit.FreeAddr() // nothing listens there
		if err != nil {
			return r, err
		}
		recvAddr = a
	} else {
		var err error
		if recv, err = benchkit.StartReceiver(); err != nil {
			return r, err
		}
		defer recv.Stop()
		recvAddr = recv.Addr()
	}
	listen, err := benchkit.FreeAddr()
	if err != nil {
		return r, err
	}
	httpAddr, err := benchkit.FreeAddr()
	if err != nil {
		return r, err
	}
	tailPath := filepath.Join(dir, "app.log")
	if err := os.WriteFile(tailPath, nil, 0o644); err != nil {
		return r, err
	}
	cfg := fmt.Sprintf("service:\n  data_dir: %s\n  http_listen: %q\n", filepath.Join(dir, "data"), httpAddr) + extra(*svcExtra, "  ")
	if *maxBytes != "" {
		cfg += fmt.Sprintf("buffer:\n  max_bytes: %s\n", *maxBytes)
	}
	cfg += fmt.Sprintf("inputs:\n  - type: forward\n    listen: %s\n%s  - type: tail\n    paths: [%s]\n", listen, extra(*inExtra, "    "), tailPath)
	cfg += fmt.Sprintf("outputs:\n  - type: forward\n    servers: [%s]\n%s", recvAddr, extra(*outExtra, "    "))
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return r, err
	}
	cmd := exec.Command(bin, "agent", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if p := os.Getenv("LOGSHIP_MEMPROFILE"); p != "" {
		cmd.Env = append(os.Environ(), "LOGSHIP_MEMPROFILE="+strings.ReplaceAll(name, " ", "-")+"-"+filepath.Base(p))
		cmd.Dir = filepath.Dir(p)
	}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-waited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	}()
	if err := benchkit.WaitListening(listen, 30*time.Second); err != nil {
		return r, err
	}
	pid := cmd.Process.Pid
	metrics := "http://" + httpAddr + "/metrics"

	// The sampler keeps the peaks of the Go figures.
	sampleStop := make(chan struct{})
	sampleDone := make(chan struct{})
	var pmu sync.Mutex
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			vals := scrape(metrics, memstats)
			pmu.Lock()
			for k, v := range vals {
				r.peaks[k] = max(r.peaks[k], v)
			}
			pmu.Unlock()
			select {
			case <-sampleStop:
				return
			case <-t.C:
			}
		}
	}()

	// The tailed file grows all along.
	tailStop := make(chan struct{})
	tailDone := make(chan struct{})
	go func() { defer close(tailDone); growFile(tailPath, *tailRate, tailStop) }()

	var (
		stop  atomic.Bool
		acks  atomic.Int64
		wg    sync.WaitGroup
		conns []net.Conn
		errs  = make([]error, *clients)
	)
	for i := range *clients {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			return r, err
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = syncSender(c, "bench.rss."+strconv.Itoa(i), payload, &stop, &acks)
		}()
	}
	t0 := time.Now()
	if !down {
		time.Sleep(*duration)
	} else {
		// Until no ack came for 3s (the buffer is full and blocks), then hold.
		last, lastChange := int64(-1), time.Now()
		for {
			time.Sleep(200 * time.Millisecond)
			if n := acks.Load(); n != last {
				last, lastChange = n, time.Now()
			}
			if time.Since(lastChange) > 3*time.Second {
				break
			}
			if time.Since(t0) > *fillMax {
				r.note = fmt.Sprintf("acks still flowing after -fill-timeout %s: the buffer did not fill", *fillMax)
				break
			}
		}
		fill := time.Since(t0)
		time.Sleep(*hold)
		r.note = strings.TrimSpace(r.note + fmt.Sprintf(" buffer filled in %s (logship_buffer_bytes %.0f MiB of max_bytes %.0f MiB), then held %s",
			fill.Round(100*time.Millisecond), scrapeOne(metrics, "logship_buffer_bytes")/(1<<20), scrapeOne(metrics, "logship_buffer_max_bytes")/(1<<20), *hold))
	}
	r.elapsed = time.Since(t0)
	r.acks = acks.Load()
	r.events = r.acks * int64(*perChunk)
	r.hwm, r.rssEnd = procMem(pid)
	stop.Store(true)
	for _, c := range conns {
		_ = c.SetDeadline(time.Now()) // stalled clients wait for acks that never come
	}
	wg.Wait()
	close(tailStop)
	<-tailDone
	close(sampleStop)
	<-sampleDone
	for _, c := range conns {
		_ = c.Close()
	}
	if !down {
		if err := errors.Join(errs...); err != nil {
			return r, err
		}
	}
	pmu.Lock()
	defer pmu.Unlock()
	fmt.Printf("%s: %d acks, %d events in %s; VmHWM %.1f MiB\n", name, r.acks, r.events, r.elapsed.Round(time.Millisecond), float64(r.hwm)/(1<<20))
	return r, nil
}

// extra turns "k: v;k: v" into YAML lines with indent.
func extra(s, indent string) string {
	var out string
	for _, kv := range strings.Split(s, ";") {
		if kv = strings.TrimSpace(kv); kv != "" {
			out += indent + kv + "\n"
		}
	}
	return out
}

var chunkSeq atomic.Uint64

// syncSender sends one chunk, waits for its ack, and again, until stop.
func syncSender(c net.Conn, tag string, payload []byte, stop *atomic.Bool, acks *atomic.Int64) error {
	enc := forwardproto.NewEncoder()
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	var buf []byte
	var salt [8]byte
	_, _ = rand.Read(salt[:])
	for !stop.Load() {
		var id [16]byte
		copy(id[:], salt[:])
		binary.BigEndian.PutUint64(id[8:], chunkSeq.Add(1))
		chunk := base64.StdEncoding.EncodeToString(id[:])
		var err error
		buf, err = enc.AppendPackedForward(buf[:0], tag, payload, *perChunk, chunk, forwardproto.CompressNone)
		if err != nil {
			return err
		}
		if _, err := c.Write(buf); err != nil {
			if stop.Load() {
				return nil
			}
			return err
		}
		got, err := dec.NextAck()
		if err != nil {
			if stop.Load() {
				return nil
			}
			return fmt.Errorf("waiting for the ack of %s: %w", chunk, err)
		}
		if got != chunk {
			return fmt.Errorf("ack %q for chunk %q", got, chunk)
		}
		acks.Add(1)
	}
	return nil
}

// growFile appends rate lines a second to path until stop.
func growFile(path string, rate int, stop <-chan struct{}) {
	if rate <= 0 {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	line := "2026-11-22T10:00:00Z INFO tailed line " + strings.Repeat("y", 120) + "\n"
	per := max(1, rate/10)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			_, _ = f.WriteString(strings.Repeat(line, per))
		}
	}
}

// procMem returns VmHWM and VmRSS of pid, in bytes.
func procMem(pid int) (hwm, rss int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = v << 10
		case "VmRSS:":
			rss = v << 10
		}
	}
	return hwm, rss
}

// scrape returns the values of the named metrics (summed over label sets)
// from a Prometheus text page.
func scrape(url string, names []string) map[string]float64 {
	out := map[string]float64{}
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range names {
			if !strings.HasPrefix(line, name) {
				continue
			}
			rest := line[len(name):]
			if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
				continue
			}
			f := strings.Fields(rest)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				out[name] += v
			}
		}
	}
	return out
}

func scrapeOne(url, name string) float64 { return scrape(url, []string{name})[name] }
