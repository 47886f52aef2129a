// Command scenarios runs whole-process scenarios with the logship binary
// on its default config (only what the topology needs: addresses,
// data_dir, paths) and, when a fluent-bit binary is found, the same
// topologies with Fluent Bit as the agent in the same run:
//
//	(a) generator appends lines to a file --tail--> agent --forward--> logship aggregator --> file
//	    durable: both buffers on their default (sync always); measured until
//	    the aggregator's file has every line; beside it, the disk's
//	    fdatasync'd write bandwidth measured in the same run. With
//	    -aggregator-dir the aggregator writes on another filesystem, as
//	    when it runs on its own host: the disk then holds what one agent
//	    host writes (the application's log and the agent's buffer).
//	(b) synchronous forward senders --> agent --forward--> counting receiver
//	    (4 connections, 1000-event chunks, each waiting for its ack).
//	(c) synchronous forward senders --> agent --kafka--> in-process kfake
//	    cluster, measured until Kafka holds every event.
//
// Per scenario and target it prints events/s, MB/s, CPU seconds per
// million events (utime+stime from /proc, summed per role), each
// process's peak RSS (VmHWM) and the bytes it wrote to storage; then the
// logship/Fluent Bit ratios. CPU per event is the figure that travels
// between machines; events/s on a shared 2-core machine does not.
//
// Usage:
//
//	make build && go run ./bench/scenarios
//	go run ./bench/scenarios -only a,b -events 1000000 -fluent-bit none
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/bench/internal/benchkit"
)

var (
	bin         = flag.String("logship", "bin/logship", "the logship binary (make build)")
	fluentBit   = flag.String("fluent-bit", "", `fluent-bit binary; "" = $FLUENT_BIT or fluent-bit on PATH, "none" = logship only`)
	only        = flag.String("only", "a,b,c", "scenarios to run, comma-separated: a (tail -> agent -> aggregator -> file), b (forward -> agent -> forward), c (forward -> agent -> kafka)")
	events      = flag.Int("events", 200_000, "events per scenario and target")
	eventSize   = flag.Int("size", 200, "bytes per event: a line of (a) with its newline; about, for the msgpack records of (b) and (c)")
	lineRate    = flag.Int("rate", 0, "lines per second (a)'s generator appends, in 10ms steps; 0 = as fast as it can (the agent's output then lags its input, as after an outage: try a rate below the aggregator's for the steady state)")
	perChunk    = flag.Int("chunk", 1000, "events per forward chunk of the senders of (b) and (c) (fluent-logger sends 1 to 1000s; try 10)")
	conns       = flag.Int("conns", 4, "synchronous sender connections of (b) and (c)")
	partitions  = flag.Int("kafka-partitions", 4, "partitions of the kfake topic of (c)")
	diskFor     = flag.Duration("disk-time", 3*time.Second, "how long (a)'s disk baseline writes 1 MiB blocks + fdatasync")
	timeout     = flag.Duration("timeout", 3*time.Minute, "longest wait for one target of one scenario to deliver every event")
	dirFlag     = flag.String("dir", os.TempDir(), "directory on the disk to measure: data dirs, files and the baseline go under it")
	aggDirFlag  = flag.String("aggregator-dir", "", `directory for (a)'s aggregator (its buffer and output file) on another filesystem, as when it runs on its own host (e.g. /dev/shm); "" = under -dir, on the measured disk`)
	verbose     = flag.Bool("v", false, "the processes' logs to stderr (default: files in the work directory, printed on failure)")
	keep        = flag.Bool("keep", false, "keep the work directory")
	settleDelay = 300 * time.Millisecond // after a process is ready, before the clock starts
)

func main() {
	flag.Parse()
	failed, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scenarios:", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

// scenario is one topology, run once per target.
type scenario struct {
	id, title string
	run       func(env *env, t string) (result, error)
	// fbSkip, when not "", is why Fluent Bit does not run it.
	fbSkip string
}

// env is what a scenario's run needs.
type env struct {
	work  string
	agg   string // (a)'s aggregator's directory: under work, or under -aggregator-dir
	fbBin string
	logs  []string   // the log files of the run in progress
	files []*os.File // and their open handles
}

func run() (failed bool, err error) {
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		s = strings.TrimSpace(s)
		if s != "a" && s != "b" && s != "c" {
			return false, fmt.Errorf("-only: %q is not a, b or c", s)
		}
		want[s] = true
	}
	if *events < *perChunk || *perChunk < 1 || *conns < 1 {
		return false, fmt.Errorf("-events %d, -chunk %d, -conns %d: want events >= chunk >= 1 and conns >= 1", *events, *perChunk, *conns)
	}
	if _, err := os.Stat(*bin); err != nil {
		return false, fmt.Errorf("%w (run make build first)", err)
	}
	work, err := os.MkdirTemp(*dirFlag, "logship-scenarios")
	if err != nil {
		return false, err
	}
	if *keep {
		defer fmt.Printf("\nwork directory kept: %s\n", work)
	} else {
		defer func() { _ = os.RemoveAll(work) }()
	}
	e := &env{work: work, agg: work, fbBin: benchkit.FluentBitPath(*fluentBit)}
	if *aggDirFlag != "" {
		agg, err := os.MkdirTemp(*aggDirFlag, "logship-scenarios-aggregator")
		if err != nil {
			return false, err
		}
		defer func() { _ = os.RemoveAll(agg) }()
		e.agg = agg
	}
	printHeader(e)

	all := []scenario{
		{id: "a", title: "tail -> agent -> forward -> aggregator -> file", run: runA},
		{id: "b", title: "forward -> agent -> forward -> receiver", run: runB},
		{id: "c", title: "forward -> agent -> kafka (kfake)", run: runC},
	}
	if e.fbBin != "" && !hasPlugin(e.fbBin, "kafka") {
		all[2].fbSkip = "this fluent-bit has no out_kafka (built without librdkafka)"
	}
	var (
		results []result
		disk    *benchkit.DiskBandwidth
	)
	for _, s := range all {
		if !want[s.id] {
			continue
		}
		fmt.Printf("\n(%s) %s\n", s.id, s.title)
		if s.id == "a" {
			d, err := benchkit.FdatasyncBandwidth(filepath.Join(work, "fdatasync.bin"), 1<<20, *diskFor)
			if err != nil {
				return false, fmt.Errorf("disk baseline: %w", err)
			}
			disk = &d
			fmt.Printf("  disk: %d x (1 MiB write + fdatasync) in %.2fs: %.1f MB/s\n", d.Syncs, d.Elapsed.Seconds(), d.MBps())
		}
		targets := []string{"logship"}
		switch {
		case e.fbBin == "":
		case s.fbSkip != "":
			fmt.Printf("  fluent-bit: SKIP: %s\n", s.fbSkip)
		default:
			targets = append(targets, "fluent-bit")
		}
		for _, t := range targets {
			e.logs = nil
			r, err := s.run(e, t)
			r.scenario, r.target = s.id, t
			if err != nil {
				failed = true
				r.err = err
				fmt.Printf("  %-10s FAIL: %v\n", t, err)
				e.dumpLogs()
			} else {
				fmt.Printf("  %-10s %s\n", t, r.summary())
			}
			e.closeLogs()
			results = append(results, r)
		}
	}
	printTable(results, disk)
	printRatios(results, disk)
	printDurability(e)
	return failed, nil
}

func printHeader(e *env) {
	fmt.Printf("command:   go run ./bench/scenarios %s\n", strings.Join(os.Args[1:], " "))
	var set []string
	flag.VisitAll(func(f *flag.Flag) { set = append(set, "-"+f.Name+"="+f.Value.String()) })
	fmt.Printf("flags:     %s\n", strings.Join(set, " "))
	fmt.Printf("date:      %s\n", time.Now().UTC().Format(time.RFC3339))
	if out, err := exec.Command(*bin, "version").Output(); err == nil {
		fmt.Printf("logship:   %s (%s)\n", strings.TrimSpace(string(out)), *bin)
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		fmt.Printf("tree:      %s\n", strings.TrimSpace(string(out)))
	}
	if e.fbBin != "" {
		if out, err := exec.Command(e.fbBin, "--version").Output(); err == nil {
			fmt.Printf("fluent-bit: %s (%s)\n", strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0], e.fbBin)
		}
	} else if *fluentBit == "none" {
		fmt.Println("fluent-bit: SKIP: -fluent-bit none")
	} else {
		fmt.Println("fluent-bit: SKIP: not on PATH, $FLUENT_BIT unset and no -fluent-bit")
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		fmt.Printf("machine:   %d CPUs, kernel %s\n", runtime.NumCPU(), utsString(u.Release[:]))
	}
	if out, err := exec.Command("df", "-T", e.work).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) >= 2 {
			fmt.Printf("disk:      %s (%s) for %s\n", f[0], f[1], e.work)
		}
	}
	fmt.Printf("buffer.sync (the roles' default): %s\n", agent.Role.Config().Buffer.Sync.String())
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

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// hasPlugin says whether fluent-bit -h lists an output plugin name.
func hasPlugin(fbBin, name string) bool {
	out, _ := exec.Command(fbBin, "-h").CombinedOutput()
	section := ""
	for _, line := range strings.Split(ansi.ReplaceAllString(string(out), ""), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(line, " ") {
			section = strings.ToLower(t) // a heading: Inputs, Filters, Outputs
			continue
		}
		if f := strings.Fields(t); len(f) > 0 && f[0] == name && strings.HasPrefix(section, "output") {
			return true
		}
	}
	return false
}

// logFile returns where a process's output goes: stderr with -v, else a
// file of the work directory remembered for dumpLogs.
func (e *env) logFile(name string) (io.Writer, error) {
	if *verbose {
		return os.Stderr, nil
	}
	path := filepath.Join(e.work, name+".log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	e.logs = append(e.logs, path)
	e.files = append(e.files, f)
	return f, nil
}

// closeLogs closes the log files of the run that ended.
func (e *env) closeLogs() {
	for _, f := range e.files {
		_ = f.Close()
	}
	e.files = nil
}

// dumpLogs prints the last lines of the failed run's process logs.
func (e *env) dumpLogs() {
	for _, p := range e.logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		fmt.Fprintf(os.Stderr, "--- last lines of %s\n", p)
		for _, l := range lines[max(0, len(lines)-20):] {
			fmt.Fprintln(os.Stderr, l)
		}
	}
}
