package e2e

// Helpers of the long-running flow tests (outage_test.go,
// backpressure_test.go, chaos_kafka_test.go): numbered tail lines and
// forward clients that keep writing until told to stop, a tally of the
// markers that came out, RSS sampling and metric scraping.

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

// envDuration is the duration in the environment variable name, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration (3m, 90s)", name, s)
	}
	return d
}

// envCount is the number in the environment variable name (at least
// least), or def.
func envCount(t *testing.T, name string, def, least int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < least {
		t.Fatalf("%s=%q: want a number >= %d", name, s, least)
	}
	return n
}

// lineWriter appends numbered lines "#T<i># xxx..." (95-100 bytes) to
// dir/app.log at rate lines per second, renaming the file to app.log.<i>
// and creating a new one every rotateEvery lines (0: never), until max
// lines are written or stop is called.
type lineWriter struct {
	dir         string
	rate        int
	rotateEvery int
	max         int

	written atomic.Int64 // lines flushed to the files
	stopped atomic.Bool
	done    chan struct{}
	err     error
}

func startLineWriter(t *testing.T, dir string, rate, rotateEvery, max int) *lineWriter {
	t.Helper()
	w := &lineWriter{dir: dir, rate: rate, rotateEvery: rotateEvery, max: max, done: make(chan struct{})}
	go func() { defer close(w.done); w.err = w.run() }()
	t.Cleanup(func() { w.stopped.Store(true); <-w.done })
	return w
}

func (w *lineWriter) run() error {
	path := filepath.Join(w.dir, "app.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	bw := bufio.NewWriterSize(f, 64<<10)
	pad := strings.Repeat("x", 80)
	start := time.Now()
	i := 0
	for ; i < w.max && !w.stopped.Load(); i++ {
		fmt.Fprintf(bw, "#T%d# %s\n", i, pad)
		if w.rotateEvery > 0 && i%w.rotateEvery == w.rotateEvery-1 {
			if err := bw.Flush(); err != nil {
				return err
			}
			w.written.Store(int64(i + 1))
			f.Close()
			if err := os.Rename(path, filepath.Join(w.dir, fmt.Sprintf("app.log.%d", i))); err != nil {
				return err
			}
			if f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
				return err
			}
			bw.Reset(f)
		}
		if i%100 == 99 {
			if err := bw.Flush(); err != nil {
				return err
			}
			w.written.Store(int64(i + 1))
			if ahead := time.Duration(i+1)*time.Second/time.Duration(w.rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	w.written.Store(int64(i))
	return nil
}

// stop ends the writer and returns how many lines it wrote.
func (w *lineWriter) stop(t *testing.T) int {
	t.Helper()
	w.stopped.Store(true)
	return w.wait(t)
}

// wait waits for the writer to end and returns how many lines it wrote.
func (w *lineWriter) wait(t *testing.T) int {
	t.Helper()
	<-w.done
	if w.err != nil {
		t.Fatalf("tail writer: %v", w.err)
	}
	return int(w.written.Load())
}

// fluentClients are synchronous forward clients (fluent-logger-golang with
// RequestAck, as applications use it): client c posts {"id": "#F<c>-<i>#"}
// for i = 0, 1, ... at rate events per second each (0: as fast as acks
// come), until max events or stop. A Post the library retried (same chunk
// id: the receiver's dedup sees it) and still failed is posted again
// with a new chunk id: a duplicate that is the client's own, so the
// marker is remembered in reposted.
//
// The library reports every ack it waited for in vain (before it resends)
// on os.Stderr, without a newline, which would glue the test's next log
// line to it; while the clients run, os.Stderr is a pipe that counts
// those reports (ackTimeouts) and drops them.
type fluentClients struct {
	acked    []atomic.Int64 // per client: events whose Post returned nil
	reposts  atomic.Int64
	errs     atomic.Int64 // Posts that returned an error
	stopped  atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	reposted map[string]bool

	ackTimeouts atomic.Int64 // the library's reports of an ack that did not come
	stderr      *os.File     // the real one, while os.Stderr is the pipe
	tapDone     chan struct{}
	restoreOnce sync.Once
}

// tapStderr points os.Stderr at a pipe whose reader counts the library's
// reports.
func (fc *fluentClients) tapStderr(t *testing.T) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fc.stderr, fc.tapDone = os.Stderr, make(chan struct{})
	os.Stderr = w
	go func() {
		defer close(fc.tapDone)
		defer r.Close()
		buf := make([]byte, 64<<10)
		var carry []byte
		for {
			n, err := r.Read(buf)
			carry = append(carry, buf[:n]...)
			fc.ackTimeouts.Add(int64(bytes.Count(carry, []byte("fluent#write"))))
			// keep a tail that may hold the start of a report cut in two
			if k := len(carry) - len("fluent#write") + 1; k > 0 {
				carry = append(carry[:0], carry[k:]...)
			}
			if err != nil {
				return
			}
		}
	}()
}

// restoreStderr gives os.Stderr back once the clients are done.
func (fc *fluentClients) restoreStderr() {
	fc.restoreOnce.Do(func() {
		if fc.stderr == nil {
			return
		}
		w := os.Stderr
		os.Stderr = fc.stderr
		w.Close()
		<-fc.tapDone
	})
}

func startFluentClients(t *testing.T, addr string, n, rate, max int, cfg fluent.Config) *fluentClients {
	t.Helper()
	host, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)
	cfg.FluentHost, cfg.FluentPort, cfg.RequestAck, cfg.SubSecondPrecision = host, port, true, true
	fc := &fluentClients{acked: make([]atomic.Int64, n), reposted: map[string]bool{}}
	fc.tapStderr(t)
	for c := range n {
		fc.wg.Add(1)
		go func() {
			defer fc.wg.Done()
			var lg *fluent.Fluent
			defer func() {
				if lg != nil {
					lg.Close()
				}
			}()
			start := time.Now()
			failed := 0 // failed Posts in a row
			for i := 0; i < max; {
				if fc.stopped.Load() && (failed == 0 || failed > 100) {
					return
				}
				if lg == nil {
					var err error
					if lg, err = fluent.New(cfg); err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
				}
				id := fmt.Sprintf("#F%d-%d#", c, i)
				if err := lg.Post("app.client", map[string]any{"id": id}); err != nil {
					fc.errs.Add(1)
					fc.reposts.Add(1)
					fc.mu.Lock()
					fc.reposted[id] = true
					fc.mu.Unlock()
					lg.Close()
					lg = nil
					failed++
					continue
				}
				failed = 0
				i++
				fc.acked[c].Store(int64(i))
				if rate > 0 {
					if ahead := time.Duration(i)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
						time.Sleep(ahead)
					}
				}
			}
		}()
	}
	t.Cleanup(func() {
		fc.stopped.Store(true)
		fc.restoreStderr()
	})
	return fc
}

// total is the number of acknowledged events of every client.
func (fc *fluentClients) total() int64 {
	var n int64
	for i := range fc.acked {
		n += fc.acked[i].Load()
	}
	return n
}

// stop asks the clients to end (a Post under way finishes first, a failed
// one is posted again until it is acknowledged) and waits at most
// timeout; it returns the acknowledged events per client.
func (fc *fluentClients) stop(t *testing.T, timeout time.Duration) []int {
	t.Helper()
	fc.stopped.Store(true)
	done := make(chan struct{})
	go func() { fc.wg.Wait(); close(done) }()
	select {
	case <-done:
		fc.restoreStderr()
	case <-time.After(timeout):
		t.Fatalf("forward clients still posting after %s", timeout)
	}
	out := make([]int, len(fc.acked))
	for i := range fc.acked {
		out[i] = int(fc.acked[i].Load())
	}
	return out
}

// tally counts, per event, how often its marker (#T<i># of a tail line,
// #F<c>-<i># of a client event) was seen.
type tally struct {
	mu   sync.Mutex
	tail []uint16
	cl   [][]uint16
}

// add counts the marker in one delivered event (a file line, a Kafka
// value).
func (ta *tally) add(ev []byte) error {
	i := bytes.IndexByte(ev, '#')
	if i < 0 || i+2 >= len(ev) {
		return fmt.Errorf("event without a marker: %q", ev)
	}
	j := bytes.IndexByte(ev[i+1:], '#')
	if j < 0 {
		return fmt.Errorf("event without a marker end: %q", ev)
	}
	m := string(ev[i+1 : i+1+j])
	ta.mu.Lock()
	defer ta.mu.Unlock()
	switch m[0] {
	case 'T':
		n, err := strconv.Atoi(m[1:])
		if err != nil || n < 0 {
			return fmt.Errorf("bad marker %q", m)
		}
		ta.tail = grow(ta.tail, n)
		ta.tail[n]++
	case 'F':
		cs, is, _ := strings.Cut(m[1:], "-")
		c, err1 := strconv.Atoi(cs)
		n, err2 := strconv.Atoi(is)
		if err1 != nil || err2 != nil || c < 0 || c > 1000 || n < 0 {
			return fmt.Errorf("bad marker %q", m)
		}
		for len(ta.cl) <= c {
			ta.cl = append(ta.cl, nil)
		}
		ta.cl[c] = grow(ta.cl[c], n)
		ta.cl[c][n]++
	default:
		return fmt.Errorf("bad marker %q", m)
	}
	return nil
}

func grow(s []uint16, n int) []uint16 {
	if n < len(s) {
		return s
	}
	return append(s, make([]uint16, n+1-len(s))...)
}

// count compares the tally with what was written: nTail lines and
// perClient[c] events of client c. Duplicates of a marker in reposted
// (posted again by its client after a failed Post) are the client's and
// counted apart.
func (ta *tally) count(nTail int, perClient []int, reposted map[string]bool) flowCount {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	st := flowCount{total: nTail}
	for _, n := range perClient {
		st.total += n
	}
	miss := func(m string) {
		if st.lost == 0 {
			st.firstLost = m
		}
		st.lost++
	}
	for i := range max(nTail, len(ta.tail)) {
		var n uint16
		if i < len(ta.tail) {
			n = ta.tail[i]
		}
		switch {
		case i >= nTail:
			st.unexpected += int(n)
		case n == 0:
			miss(fmt.Sprintf("T%d", i))
		default:
			st.dupTail += int(n) - 1
		}
	}
	for c := range max(len(perClient), len(ta.cl)) {
		var got []uint16
		if c < len(ta.cl) {
			got = ta.cl[c]
		}
		want := 0
		if c < len(perClient) {
			want = perClient[c]
		}
		for i := range max(want, len(got)) {
			var n uint16
			if i < len(got) {
				n = got[i]
			}
			switch {
			case i >= want:
				st.unexpected += int(n)
			case n == 0:
				miss(fmt.Sprintf("F%d-%d", c, i))
			case n > 1 && reposted[fmt.Sprintf("#F%d-%d#", c, i)]:
				st.dupReposted += int(n) - 1
			default:
				st.dupClient += int(n) - 1
			}
		}
	}
	return st
}

// same reports the first marker whose count differs between two tallies.
func (ta *tally) same(o *tally) error {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range max(len(ta.tail), len(o.tail)) {
		if a, b := at(ta.tail, i), at(o.tail, i); a != b {
			return fmt.Errorf("T%d: %d vs %d times", i, a, b)
		}
	}
	for c := range max(len(ta.cl), len(o.cl)) {
		var x, y []uint16
		if c < len(ta.cl) {
			x = ta.cl[c]
		}
		if c < len(o.cl) {
			y = o.cl[c]
		}
		for i := range max(len(x), len(y)) {
			if a, b := at(x, i), at(y, i); a != b {
				return fmt.Errorf("F%d-%d: %d vs %d times", c, i, a, b)
			}
		}
	}
	return nil
}

func at(s []uint16, i int) uint16 {
	if i < len(s) {
		return s[i]
	}
	return 0
}

type flowCount struct {
	total, lost        int
	dupTail, dupClient int
	dupReposted        int // duplicates of events their client posted again
	unexpected         int // markers of events never written
	firstLost          string
}

// dups are the duplicates logship made (not the clients' re-posts).
func (st flowCount) dups() int { return st.dupTail + st.dupClient }

// tallyFile tallies the lines of a file output.
func tallyFile(path string) (*tally, error) {
	ta := &tally{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return ta, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if err := ta.add(sc.Bytes()); err != nil {
			return nil, err
		}
	}
	return ta, sc.Err()
}

// rssKiB is the resident set size of process pid (VmRSS), in KiB.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// rssSampler reads a process's VmRSS every 250 ms; pid says which
// process is current (0: none), so that restarts are followed.
type rssSampler struct {
	mu      sync.Mutex
	samples []rssSample
	stopped chan struct{}
	done    chan struct{}
}

type rssSample struct {
	at  time.Time
	kib int64
}

func startRSSSampler(t *testing.T, pid func() int) *rssSampler {
	t.Helper()
	s := &rssSampler{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if p := pid(); p > 0 {
				if kib, err := rssKiB(p); err == nil {
					s.mu.Lock()
					s.samples = append(s.samples, rssSample{time.Now(), kib})
					s.mu.Unlock()
				}
			}
			select {
			case <-s.stopped:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *rssSampler) stop() {
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
	}
	<-s.done
}

// between returns the samples taken in [from, to), in KiB.
func (s *rssSampler) between(from, to time.Time) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for _, x := range s.samples {
		if !x.at.Before(from) && x.at.Before(to) {
			out = append(out, x.kib)
		}
	}
	return out
}

func median(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func peak(xs []int64) int64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// mib renders KiB as MiB.
func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// dirBytes is the size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// metricSum sums the samples of metric name in a /metrics page whose
// labels contain every one of labels (`path="/x"`); missing is 0.
func metricSum(page, name string, labels ...string) float64 {
	var sum float64
	for _, l := range strings.Split(page, "\n") {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		sel, val, _ := strings.Cut(rest, " ")
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			sel, val = rest[:end+1], strings.TrimSpace(rest[end+1:])
		}
		match := true
		for _, want := range labels {
			if !strings.Contains(sel, want) {
				match = false
			}
		}
		if f, err := strconv.ParseFloat(strings.Fields(val + " x")[0], 64); err == nil && match {
			sum += f
		}
	}
	return sum
}

// scrape returns the /metrics page of the process serving addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	code, page, err := httpGet("http://" + addr + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	return page
}
