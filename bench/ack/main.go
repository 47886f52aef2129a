// Command ack measures what a synchronous forward sender sees: a client
// that sends one PackedForward chunk with a `chunk` option, waits for its
// ack, and only then sends the next (fluent-logger-golang with RequestAck,
// Fluent Bit's out_forward with require_ack_response). For such senders
// the ack latency is the throughput.
//
// In one run, on the disk of -dir:
//   - a bare fdatasync loop (append 1 KiB, fdatasync) as the baseline of
//     what the disk can do;
//   - a logship agent on its default config (only the listen ports and the
//     data_dir are set; buffer.sync only with -sync), forward input ->
//     buffer -> forward output to a counting receiver (or -output file),
//     driven by 1, 4 and 64 synchronous connections: ack latency p50/p99,
//     events/s, and the agent's CPU time (utime+stime from /proc) per event,
//     measured until the receiver has every acked event;
//   - the same load on a Fluent Bit relay (in_forward -> filesystem storage
//     -> out_forward with require_ack_response to the same receiver) when
//     fluent-bit is on PATH (or $FLUENT_BIT, or -fluent-bit), and the
//     logship/Fluent Bit ratios.
//
// Usage:
//
//	make build && go run ./bench/ack
//	go run ./bench/ack -sync interval -duration 3s -conns 1,4,64
package main

import (
	"bufio"
	"bytes"
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
	"syscall"
	"time"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/bench/internal/benchkit"
	outforward "github.com/logship/logship/plugins/output/forward"
)

var (
	bin       = flag.String("logship", "bin/logship", "the logship binary (make build)")
	fluentBit = flag.String("fluent-bit", "", `fluent-bit binary; "" = $FLUENT_BIT or fluent-bit on PATH, "none" = skip`)
	syncMode  = flag.String("sync", "", `buffer.sync for logship (always, interval, none); "" = the binary's default`)
	reuse     = flag.String("reuse-segments", "", `buffer.reuse_segments for logship (true, false); "" = the binary's default`)
	output    = flag.String("output", "forward", "logship's output: forward (to a counting receiver) or file")
	compress  = flag.String("compress", "", `the forward output's compress; "" = its default`)
	connsFlag = flag.String("conns", "1,4,64", "synchronous connections per case, comma-separated")
	duration  = flag.Duration("duration", 3*time.Second, "length of each case")
	perChunk  = flag.Int("events", 10, "events per chunk")
	eventSize = flag.Int("size", 200, "bytes per event (approximately)")
	dirFlag   = flag.String("dir", os.TempDir(), "directory on the disk to measure (data dirs and the fdatasync file go under it)")
	syncBytes = flag.Int("fsync-bytes", 1024, "bytes appended before each fdatasync of the baseline")
	tags      = flag.Int("tags", 0, "distinct tags (bench.ack.N) the connections use; 0 = one per connection (logship: FNV-1a(tag) % partitions picks the partition)")
	quiet     = flag.Bool("q", false, "send the processes' logs to /dev/null instead of stderr")
	warmupMB  = flag.Int("warmup-mb", 192, "MiB sent in 1000-event chunks before the cases, so that the cases run in steady state (logship: past the first segments, on reused segment files)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ack:", err)
		os.Exit(1)
	}
}

// caseResult is one (target, connections) case.
type caseResult struct {
	target   string
	conns    int
	acks     int64
	events   int64
	elapsed  time.Duration // sending phase
	drain    time.Duration // until the receiver had every acked event
	cpu      time.Duration // of the process under test, sending + drain
	sys      time.Duration // the system part of cpu
	p50, p99 time.Duration
	max      time.Duration
	fsyncs   float64 // logship's buffer fdatasyncs in the case, -1 unknown
}

func (r caseResult) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }
func (r caseResult) cpuPerEvent() float64 {
	return float64(r.cpu.Nanoseconds()) / float64(max(r.events, 1)) / 1e3
}

func run() error {
	var conns []int
	for _, s := range strings.Split(*connsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-conns: %q is not a positive number", s)
		}
		conns = append(conns, n)
	}
	logs := io.Writer(os.Stderr)
	if *quiet {
		logs = io.Discard
	}
	if _, err := os.Stat(*bin); err != nil {
		return fmt.Errorf("%w (run make build first)", err)
	}
	work, err := os.MkdirTemp(*dirFlag, "logship-bench-ack")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()

	printHeader(work)

	fmt.Println()
	for _, over := range []bool{false, true} {
		base, err := fsyncBaseline(filepath.Join(work, "fdatasync.bin"), *duration, over)
		if err != nil {
			return err
		}
		how := "append"
		if over {
			how = "write over a synced file"
		}
		fmt.Printf("baseline: %s %d B + fdatasync, %d times in %.2fs: p50 %s, p99 %s, max %s, %.0f syncs/s, CPU %.1f us/sync (%.0f%% sys)\n",
			how, *syncBytes, base.n, base.elapsed.Seconds(), ms(base.p50), ms(base.p99), ms(base.max), float64(base.n)/base.elapsed.Seconds(),
			float64(base.cpu.Microseconds())/float64(max(base.n, 1)), 100*base.sys.Seconds()/max(base.cpu.Seconds(), 1e-9))
	}

	recv, err := benchkit.StartReceiver()
	if err != nil {
		return err
	}
	defer recv.Stop()
	payload := benchkit.MakeChunk(*perChunk, *eventSize)

	ls, err := measureLogship(work, recv, payload, conns, logs)
	if err != nil {
		return err
	}
	var fb []caseResult
	fbBin := benchkit.FluentBitPath(*fluentBit)
	if fbBin == "" {
		if *fluentBit == "none" {
			fmt.Println("\nfluent-bit: SKIP: -fluent-bit none")
		} else {
			fmt.Println("\nfluent-bit: SKIP: not on PATH, $FLUENT_BIT unset and no -fluent-bit")
		}
	} else if fb, err = measureFluentBit(fbBin, work, recv, payload, conns, logs); err != nil {
		return err
	}

	fmt.Printf("\n%-10s %5s %8s %10s %9s %9s %9s %10s %7s %6s %9s\n", "target", "conns", "acks", "events/s", "ack p50", "ack p99", "ack max", "CPU us/ev", "sys %", "CPU %", "fsync/ack")
	for _, r := range append(append([]caseResult(nil), ls...), fb...) {
		fs := "-"
		if r.fsyncs >= 0 {
			fs = fmt.Sprintf("%.2f", r.fsyncs/float64(max(r.acks, 1)))
		}
		fmt.Printf("%-10s %5d %8d %10.0f %9s %9s %9s %10.2f %6.0f%% %5.0f%% %9s\n", r.target, r.conns, r.acks, r.rate(),
			ms(r.p50), ms(r.p99), ms(r.max), r.cpuPerEvent(), 100*r.sys.Seconds()/max(r.cpu.Seconds(), 1e-9), 100*r.cpu.Seconds()/(r.elapsed+r.drain).Seconds(), fs)
	}
	fmt.Println("(CPU us/ev: utime+stime of the process per event, until the receiver had every acked event; sys %: the kernel's share of it;\n CPU %: CPU time over wall time, 100% = one core; fsync/ack: the buffer's fdatasyncs per ack, from /metrics)")
	if len(fb) == len(ls) {
		fmt.Printf("\n%-5s %22s %24s %22s\n", "conns", "events/s logship/FB", "CPU per event logship/FB", "ack p50 logship/FB")
		for i := range ls {
			fmt.Printf("%-5d %21.2fx %23.2fx %21.2fx\n", ls[i].conns, ls[i].rate()/fb[i].rate(), ls[i].cpuPerEvent()/fb[i].cpuPerEvent(), float64(ls[i].p50)/float64(fb[i].p50))
		}
	}
	mode, how := *syncMode, "-sync"
	if mode == "" {
		mode, how = agent.Role.Config().Buffer.Sync.String(), "default"
	}
	fmt.Printf("\ndurability at the ack:\n  logship:    buffer.sync %s (%s): %s\n", mode, how, durability(mode))
	if fbBin != "" {
		fmt.Println("  fluent-bit: storage.type filesystem, storage.sync normal: chunk in an mmap'd file, no fsync: survives a process crash, not a power cut")
	}
	if *output == "forward" {
		c := *compress
		if c == "" {
			c = outforward.Factory().NewConfig().(*outforward.Config).Compress + " (its default)"
		}
		fmt.Printf("  logship's forward output compress: %s; Fluent Bit's out_forward: uncompressed\n", c)
	}
	return nil
}

func durability(mode string) string {
	switch mode {
	case "always":
		return "grouped fdatasync before every ack: survives a power cut"
	case "interval":
		return "acks wait for the next periodic fdatasync: survives a power cut"
	case "none":
		return "ack after write(2), no fsync: survives a process crash, not a power cut"
	}
	return "unknown"
}

func printHeader(work string) {
	fmt.Printf("date:      %s\n", time.Now().UTC().Format(time.RFC3339))
	if out, err := exec.Command(*bin, "version").Output(); err == nil {
		fmt.Printf("logship:   %s (%s)\n", strings.TrimSpace(string(out)), *bin)
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		fmt.Printf("tree:      %s\n", strings.TrimSpace(string(out)))
	}
	fmt.Printf("buffer.sync: %s; source default (agent.Role): %s\n", orDefault(*syncMode), agent.Role.Config().Buffer.Sync.String())
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		fmt.Printf("kernel:    %s\n", utsString(u.Release[:]))
	}
	if out, err := exec.Command("df", "-T", work).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		f := strings.Fields(lines[len(lines)-1])
		if len(f) >= 2 {
			fmt.Printf("disk:      %s (%s) for %s\n", f[0], f[1], work)
		}
	}
	tg := "one tag per connection"
	if *tags > 0 {
		tg = fmt.Sprintf("%d tags", *tags)
	}
	fmt.Printf("load:      %d B PackedForward chunks of %d events, one chunk in flight per connection, %s, %s per case\n",
		len(benchkit.MakeChunk(*perChunk, *eventSize)), *perChunk, tg, *duration)
}

func orDefault(s string) string {
	if s == "" {
		return "the binary's default (not set in the config)"
	}
	return s + " (-sync)"
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

type baseline struct {
	n             int
	elapsed       time.Duration
	cpu, sys      time.Duration // of this process during the loop
	p50, p99, max time.Duration
}

const overBytes = 256 << 20

// fsyncBaseline appends -fsync-bytes and fdatasyncs, for d.
// fsyncBaseline appends -fsync-bytes and fdatasyncs in a loop for d; with
// over, it writes over a file written and synced beforehand instead (what
// a reused segment file costs).
func fsyncBaseline(path string, d time.Duration, over bool) (baseline, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if over {
		flags = os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return baseline{}, err
	}
	defer func() { _ = f.Close(); _ = os.Remove(path) }()
	buf := bytes.Repeat([]byte{'x'}, *syncBytes)
	if over {
		// 256 MiB, written over from the start again when the loop gets
		// to its end
		big := bytes.Repeat([]byte{'o'}, 1<<20)
		for i := 0; i < overBytes>>20; i++ {
			if _, err := f.Write(big); err != nil {
				return baseline{}, err
			}
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return baseline{}, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return baseline{}, err
		}
	}
	var lat []time.Duration
	u0, s0, err := benchkit.CPUTimes(os.Getpid())
	if err != nil {
		return baseline{}, err
	}
	t0 := time.Now()
	var at int64
	for time.Since(t0) < d {
		s := time.Now()
		if over && at+int64(len(buf)) > overBytes {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return baseline{}, err
			}
			at = 0
		}
		at += int64(len(buf))
		if _, err := f.Write(buf); err != nil {
			return baseline{}, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return baseline{}, err
		}
		lat = append(lat, time.Since(s))
	}
	el := time.Since(t0)
	u1, s1, err := benchkit.CPUTimes(os.Getpid())
	if err != nil {
		return baseline{}, err
	}
	benchkit.SortDurations(lat)
	return baseline{n: len(lat), elapsed: el, cpu: u1 + s1 - u0 - s0, sys: s1 - s0, p50: benchkit.Percentile(lat, 50), p99: benchkit.Percentile(lat, 99), max: lat[len(lat)-1]}, nil
}

// target is a process under test and how to know its output has caught up.
type target struct {
	name     string
	addr     string
	pid      int
	done     func() (int64, error) // events delivered so far
	fsyncs   func() float64        // buffer fdatasyncs so far, -1 unknown
	drainMax time.Duration
}

func measureLogship(work string, recv *benchkit.Receiver, payload []byte, conns []int, logs io.Writer) ([]caseResult, error) {
	dir := filepath.Join(work, "logship")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	listen, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	l := benchkit.Logship{Bin: *bin, Dir: dir, Listen: listen, HTTPListen: httpAddr, Stderr: logs}
	if *syncMode != "" {
		l.Buffer = fmt.Sprintf("  sync: %s\n", *syncMode)
	}
	if *reuse != "" {
		l.Buffer += fmt.Sprintf("  reuse_segments: %s\n", *reuse)
	}
	var done func() (int64, error)
	switch *output {
	case "forward":
		l.Output = benchkit.ForwardOutput(recv.Addr(), *compress)
		done = func() (int64, error) { return recv.Count(), nil }
	case "file":
		path := filepath.Join(dir, "out", "all.log")
		l.Output = fmt.Sprintf("  - type: file\n    path: %s\n", path)
		lc := &benchkit.LineCounter{Path: path}
		done = lc.Count
	default:
		return nil, fmt.Errorf("-output %q: forward or file", *output)
	}
	p, err := l.Start()
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	t := target{name: "logship", addr: listen, pid: p.Pid(), done: done, drainMax: time.Minute,
		fsyncs: func() float64 {
			return scrape("http://"+httpAddr+"/metrics", "logship_buffer_fsync_duration_seconds_count")
		}}
	out, err := runCases(t, payload, conns)
	if err == nil {
		m := "http://" + httpAddr + "/metrics"
		fmt.Printf("logship buffer: %.0f segments written over a consumed segment file of %.0f appended records\n",
			scrape(m, "logship_buffer_segments_reused_total"), scrape(m, "logship_buffer_appended_records_total"))
	}
	return out, err
}

func measureFluentBit(fbBin, work string, recv *benchkit.Receiver, payload []byte, conns []int, logs io.Writer) ([]caseResult, error) {
	dir := filepath.Join(work, "fluent-bit")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	listen, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command(fbBin, "--version").Output(); err == nil {
		fmt.Printf("\nfluent-bit: %s (%s)\n", strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0], fbBin)
	}
	p, err := benchkit.FluentBit{Bin: fbBin, Dir: dir, Listen: listen, Recv: recv.Addr(), Stderr: logs}.Start()
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	t := target{name: "fluent-bit", addr: listen, pid: p.Pid(), drainMax: time.Minute,
		done:   func() (int64, error) { return recv.Count(), nil },
		fsyncs: func() float64 { return -1 }}
	return runCases(t, payload, conns)
}

// runCases runs a warm-up (-warmup-mb in large chunks, then the case's
// chunks for a fifth of -duration), then one case per connection count.
func runCases(t target, payload []byte, conns []int) ([]caseResult, error) {
	big := benchkit.MakeChunk(1000, *eventSize)
	for sent, i := int64(0), 0; sent < int64(*warmupMB)<<20 && i < 100; i++ {
		r, err := runCase(t, big, 4, 200*time.Millisecond)
		if err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", t.name, err)
		}
		sent += r.acks * int64(len(big))
	}
	if _, err := runCase(t, payload, 1, *duration/5); err != nil {
		return nil, fmt.Errorf("%s warm-up: %w", t.name, err)
	}
	var out []caseResult
	for _, n := range conns {
		r, err := runCase(t, payload, n, *duration)
		if err != nil {
			return nil, fmt.Errorf("%s, %d connections: %w", t.name, n, err)
		}
		fmt.Printf("%-10s %3d conns: %d acks, %.0f events/s, ack p50 %s p99 %s, CPU %.2f us/event (drain %s)\n",
			r.target, r.conns, r.acks, r.rate(), ms(r.p50), ms(r.p99), r.cpuPerEvent(), r.drain.Round(time.Millisecond))
		out = append(out, r)
	}
	return out, nil
}

// runCase drives t with n synchronous connections for d, then waits until
// its output has every acked event.
func runCase(t target, payload []byte, n int, d time.Duration) (caseResult, error) {
	cs := make([]net.Conn, n)
	for i := range cs {
		c, err := net.Dial("tcp", t.addr)
		if err != nil {
			return caseResult{}, err
		}
		defer c.Close()
		cs[i] = c
	}
	done0, err := t.done()
	if err != nil {
		return caseResult{}, err
	}
	fs0 := t.fsyncs()
	usr0, sys0, err := benchkit.CPUTimes(t.pid)
	if err != nil {
		return caseResult{}, err
	}
	var (
		stop atomic.Bool
		wg   sync.WaitGroup
		lats = make([][]time.Duration, n)
		errs = make([]error, n)
	)
	t0 := time.Now()
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := i
			if *tags > 0 {
				tag = i % *tags
			}
			lats[i], errs[i] = benchkit.SyncSender(c, "bench.ack."+strconv.Itoa(tag), payload, *perChunk, func() bool { return !stop.Load() })
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return caseResult{}, err
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	acks := int64(len(all))
	events := acks * int64(*perChunk)
	for {
		got, err := t.done()
		if err != nil {
			return caseResult{}, err
		}
		if got-done0 >= events {
			break
		}
		if time.Since(t0) > elapsed+t.drainMax {
			return caseResult{}, fmt.Errorf("the output has %d of %d acked events after %s", got-done0, events, t.drainMax)
		}
		time.Sleep(2 * time.Millisecond)
	}
	drain := time.Since(t0) - elapsed
	usr1, sys1, err := benchkit.CPUTimes(t.pid)
	if err != nil {
		return caseResult{}, err
	}
	fs := float64(-1)
	if fs0 >= 0 {
		fs = t.fsyncs() - fs0
	}
	benchkit.SortDurations(all)
	r := caseResult{target: t.name, conns: n, acks: acks, events: events, elapsed: elapsed, drain: drain,
		cpu: usr1 + sys1 - usr0 - sys0, sys: sys1 - sys0, fsyncs: fs}
	if len(all) > 0 {
		r.p50, r.p99, r.max = benchkit.Percentile(all, 50), benchkit.Percentile(all, 99), all[len(all)-1]
	}
	return r, nil
}

// scrape returns the value of a metric (the sum over its label sets) from
// a Prometheus text page, -1 when it cannot.
func scrape(url, name string) float64 {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1e3)
}
