package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/logship/logship/bench/internal/benchkit"
)

// proc is a process under test: its role in the topology and its usage
// at the start of the measurement.
type proc struct {
	role, name string
	pid        int
	p          *benchkit.Proc // nil: not stopped by the meter
	u0         benchkit.Usage
}

// procResult is what one process used during the measurement.
type procResult struct {
	role, name string
	cpu, sys   time.Duration // utime+stime and stime, during the measurement
	peakRSS    int64         // VmHWM at its end (the process's whole life)
	written    int64         // write_bytes during the measurement, -1 unknown
}

// result is one target of one scenario.
type result struct {
	scenario, target string
	events           int64
	bytes            int64 // what the source produced: lines of (a), msgpack entries of (b) and (c)
	elapsed          time.Duration
	procs            []procResult
	extra            string // scenario-specific figures (ack latency)
	err              error
}

// meter measures a set of processes between begin and end.
type meter struct{ procs []*proc }

func (m *meter) add(role, name string, p *benchkit.Proc) {
	m.procs = append(m.procs, &proc{role: role, name: name, pid: p.Pid(), p: p})
}

func (m *meter) begin() error {
	for _, p := range m.procs {
		u, err := benchkit.ReadUsage(p.pid)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		p.u0 = u
	}
	return nil
}

func (m *meter) end() ([]procResult, error) {
	var out []procResult
	for _, p := range m.procs {
		u, err := benchkit.ReadUsage(p.pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		w := int64(-1)
		if u.WriteBytes >= 0 && p.u0.WriteBytes >= 0 {
			w = u.WriteBytes - p.u0.WriteBytes
		}
		out = append(out, procResult{role: p.role, name: p.name, cpu: u.CPU() - p.u0.CPU(), sys: u.Sys - p.u0.Sys, peakRSS: u.PeakRSS, written: w})
	}
	return out, nil
}

// stop stops the processes, the last added first (the agent before its
// aggregator).
func (m *meter) stop() {
	for i := len(m.procs) - 1; i >= 0; i-- {
		if m.procs[i].p != nil {
			m.procs[i].p.Stop()
		}
	}
}

func (r result) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }
func (r result) mbps() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }

// role sums the processes of a role: CPU time, written bytes; peak RSS
// of each.
type roleSum struct {
	role    string
	names   []string
	cpu     time.Duration
	sys     time.Duration
	rss     []int64
	written int64 // -1 unknown
}

func (r result) roles() []roleSum {
	var out []roleSum
	idx := map[string]int{}
	for _, p := range r.procs {
		i, ok := idx[p.role]
		if !ok {
			i = len(out)
			idx[p.role] = i
			out = append(out, roleSum{role: p.role})
		}
		s := &out[i]
		s.names = append(s.names, p.name)
		s.cpu += p.cpu
		s.sys += p.sys
		s.rss = append(s.rss, p.peakRSS)
		if p.written < 0 || s.written < 0 {
			s.written = -1
		} else {
			s.written += p.written
		}
	}
	return out
}

func (r result) role(name string) (roleSum, bool) {
	for _, s := range r.roles() {
		if s.role == name {
			return s, true
		}
	}
	return roleSum{}, false
}

// cpuPerM is CPU seconds per million events.
func (r result) cpuPerM(cpu time.Duration) float64 { return cpu.Seconds() / float64(r.events) * 1e6 }

func (r result) summary() string {
	s := fmt.Sprintf("%d events in %.2fs: %.0f events/s, %.1f MB/s", r.events, r.elapsed.Seconds(), r.rate(), r.mbps())
	for _, rs := range r.roles() {
		s += fmt.Sprintf("; %s (%s) CPU %.2f s/M events, peak RSS %s", rs.role, strings.Join(rs.names, "+"), r.cpuPerM(rs.cpu), mibs(rs.rss))
	}
	if r.extra != "" {
		s += "; " + r.extra
	}
	return s
}

func mibs(rss []int64) string {
	var s []string
	for _, b := range rss {
		s = append(s, fmt.Sprintf("%.1f", float64(b)/(1<<20)))
	}
	return strings.Join(s, "+") + " MiB"
}

func printTable(results []result, disk *benchkit.DiskBandwidth) {
	fmt.Printf("\n%-4s %-10s %-10s %-10s %8s %7s %9s %6s %10s %5s %9s %9s\n",
		"scen", "target", "role", "process", "events", "secs", "events/s", "MB/s", "CPU s/Mev", "sys%", "RSS MiB", "disk B/ev")
	for _, r := range results {
		if r.err != nil {
			fmt.Printf("%-4s %-10s FAIL: %v\n", r.scenario, r.target, r.err)
			continue
		}
		for i, rs := range r.roles() {
			ev, secs, rate, mb := "", "", "", ""
			if i == 0 {
				ev, secs, rate, mb = fmt.Sprint(r.events), fmt.Sprintf("%.2f", r.elapsed.Seconds()), fmt.Sprintf("%.0f", r.rate()), fmt.Sprintf("%.1f", r.mbps())
			}
			wr := "-"
			if rs.written >= 0 {
				wr = fmt.Sprintf("%.0f", float64(rs.written)/float64(r.events))
			}
			fmt.Printf("%-4s %-10s %-10s %-10s %8s %7s %9s %6s %10.2f %4.0f%% %9s %9s\n",
				r.scenario, r.target, rs.role, strings.Join(rs.names, "+"), ev, secs, rate, mb, r.cpuPerM(rs.cpu),
				100*rs.sys.Seconds()/max(rs.cpu.Seconds(), 1e-9), strings.TrimSuffix(mibs(rs.rss), " MiB"), wr)
		}
	}
	fmt.Println(`(events/s and MB/s: from the first event written or sent until the last one was in the sink;
 MB/s: (a) the lines' bytes, (b) and (c) the msgpack entries' bytes;
 CPU s/Mev: utime+stime of the role's processes during the measurement, per million events; sys%: the kernel's share;
 RSS MiB: each process's peak RSS (VmHWM, its whole life); disk B/ev: write_bytes of /proc/PID/io per event)`)
	if disk != nil {
		fmt.Printf("disk baseline (same filesystem, same run): 1 MiB writes + fdatasync: %.1f MB/s\n", disk.MBps())
	}
}

func find(results []result, scen, target string) (result, bool) {
	for _, r := range results {
		if r.scenario == scen && r.target == target && r.err == nil {
			return r, true
		}
	}
	return result{}, false
}

func printRatios(results []result, disk *benchkit.DiskBandwidth) {
	if a, ok := find(results, "a", "logship"); ok && disk != nil {
		fmt.Printf("\n(a) logship: %.1f MB/s of lines = %.0f%% of the disk's fdatasync'd bandwidth (%.1f MB/s; goal >= 50%%)\n",
			a.mbps(), 100*a.mbps()/disk.MBps(), disk.MBps())
		var w int64
		for _, rs := range a.roles() {
			if rs.role != "harness" && rs.written > 0 {
				w += rs.written
			}
		}
		if w > 0 {
			mb := float64(w) / a.elapsed.Seconds() / 1e6
			fmt.Printf("    the agent and the aggregator wrote %.0f B per event to storage (buffers, output file): %.1f MB/s = %.0f%% of the disk\n",
				float64(w)/float64(a.events), mb, 100*mb/disk.MBps())
		}
	}
	header := false
	for _, scen := range []string{"a", "b", "c"} {
		ls, ok1 := find(results, scen, "logship")
		fb, ok2 := find(results, scen, "fluent-bit")
		if !ok1 || !ok2 {
			continue
		}
		if !header {
			fmt.Printf("\n%-4s %20s %26s %26s\n", "scen", "events/s logship/FB", "agent CPU/event logship/FB", "agent peak RSS logship/FB")
			header = true
		}
		la, _ := ls.role("agent")
		fa, _ := fb.role("agent")
		fmt.Printf("%-4s %19.2fx %25.2fx %25.2fx\n", scen, ls.rate()/fb.rate(),
			ls.cpuPerM(la.cpu)/fb.cpuPerM(fa.cpu), float64(maxOf(la.rss))/float64(maxOf(fa.rss)))
	}
	if header {
		fmt.Println("(goals: events/s >= 2x, CPU per event <= 0.25x; the aggregator and receivers downstream are the same for both)")
	}
}

func maxOf(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func printDurability(e *env) {
	fmt.Printf("\ndurability at the ack / checkpoint:\n")
	fmt.Printf("  logship:    buffer.sync %s (default): grouped fdatasync before an ack or a tail checkpoint: survives a power cut;\n", defaultSync())
	fmt.Println("              the aggregator's file output writes with write(2) (its fsync is off by default)")
	if e.fbBin != "" {
		fmt.Println("  fluent-bit: storage.type filesystem, storage.sync normal: chunks in mmap'd files, no fsync: survives a process crash, not a power cut;")
		fmt.Println("              out_forward require_ack_response true; out_kafka with librdkafka's defaults (acks all, no compression)")
	}
	fmt.Println("  logship's kafka output: its defaults (acks all, idempotent, zstd, format json); forward output: compress none, require_ack true")
}
