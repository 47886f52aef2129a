package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

// The crash test re-executes the test binary as a child that runs a buffer,
// the runner and the file output, with a generator appending numbered
// events and printing every acknowledgement. The parent SIGKILLs it at
// random moments and starts it again; at the end it drains the buffer
// itself and checks the file against the acknowledgements: every
// acknowledged event once, each tag's events in order, no torn line.

const (
	crashChildEnv   = "LOGSHIP_FILE_CRASH_DIR"
	crashRoundEnv   = "LOGSHIP_FILE_CRASH_ROUND"
	crashPathEnv    = "LOGSHIP_FILE_CRASH_PATH"
	crashMaxOpenEnv = "LOGSHIP_FILE_CRASH_MAX_OPEN"
	crashTags       = 5
	crashParts      = 3
	crashShards     = 3 // values of the events' "shard" field
)

// crashCase is one path configuration the crash test runs with: a fixed
// path, one file per tag, and files per tag and record field with fewer
// open files allowed than there are files (closed and opened again all
// the time).
type crashCase struct {
	name    string
	path    string // relative to the test's directory
	maxOpen int
}

var crashCases = []crashCase{
	{"fixed", "out/all.log", 256},
	{"per-tag", "out/{tag}.log", 256},
	{"per-tag-and-field", "out/{tag[1]}/shard-{record.shard}.log", 4},
}

func crashBroker(dir string) (*broker.Broker, error) {
	return broker.Open(filepath.Join(dir, "buffer"), broker.WithPartitions(crashParts),
		broker.WithSegmentBytes(256<<10), broker.WithSync(broker.SyncNone))
}

func crashOutput(dir string, cc crashCase) *Output {
	return &Output{cfg: &Config{Path: filepath.Join(dir, cc.path), Mode: "0644", MaxOpenFiles: cc.maxOpen},
		set: pipeline.Settings{Name: "file", Type: "file", DataDir: filepath.Join(dir, "data"), Logger: zap.NewNop(),
			Metrics: pipeline.NopMetrics(pipeline.KindOutput, "file")}}
}

func crashComp(name string, kind pipeline.Kind, inst any) pipeline.Component {
	return pipeline.Component{Name: name, Type: "test", Kind: kind, Instance: pipeline.InstanceOf(kind, inst),
		Metrics: pipeline.NopMetrics(kind, name), Matcher: pipeline.MustCompileMatch("**")}
}

// genInput appends chunks of numbered events, {"k": "tag/round/seq",
// "shard": seq%3, "pad": ...}, round robin over the tags, and prints "ACK tag round first count" for every chunk
// acknowledged (durable in the buffer).
type genInput struct {
	round int
	out   func(string)
	stop  chan struct{}
	done  chan struct{}
}

func (g *genInput) Start(_ context.Context, emit pipeline.Emitter) error {
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.done)
		rng := rand.New(rand.NewPCG(uint64(g.round), 7))
		seq := make([]int, crashTags)
		pad := strings.Repeat("x", 400)
		for i := 0; ; i++ {
			select {
			case <-g.stop:
				return
			default:
			}
			k := i % crashTags
			tag := fmt.Sprintf("gen.%d", k)
			n := 1 + rng.IntN(40)
			var e []byte
			for j := range n {
				rec := mpack.AppendMapHeader(nil, 3)
				rec = mpack.AppendString(rec, "k")
				rec = mpack.AppendString(rec, fmt.Sprintf("%s/%d/%d", tag, g.round, seq[k]+j))
				rec = mpack.AppendString(rec, "shard")
				rec = mpack.AppendInt(rec, int64((seq[k]+j)%crashShards))
				rec = mpack.AppendString(rec, "pad")
				rec = mpack.AppendString(rec, pad[:rng.IntN(len(pad))])
				e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000}, rec)
			}
			line := fmt.Sprintf("ACK %s %d %d %d\n", tag, g.round, seq[k], n)
			err := emit.Emit(context.Background(), pipeline.Chunk{Tag: tag, Entries: e, Count: n}, func(err error) {
				if err == nil {
					g.out(line)
				}
			})
			if err != nil {
				return
			}
			seq[k] += n
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
		}
	}()
	return nil
}

func (g *genInput) Stop(context.Context) error {
	close(g.stop)
	<-g.done
	return nil
}

// crashChild is the child's main; it runs until it is killed.
func crashChild() int {
	dir := os.Getenv(crashChildEnv)
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	cc := crashCase{path: os.Getenv(crashPathEnv)}
	cc.maxOpen, _ = strconv.Atoi(os.Getenv(crashMaxOpenEnv))
	buf, err := crashBroker(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open buffer:", err)
		return 2
	}
	var mu sync.Mutex
	out := func(s string) {
		mu.Lock()
		_, _ = os.Stdout.WriteString(s) // unbuffered: one write(2) per line
		mu.Unlock()
	}
	gen := &genInput{round: round, out: out}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{crashComp("gen", pipeline.KindInput, gen)}, nil,
		[]pipeline.Component{crashComp("file", pipeline.KindOutput, crashOutput(dir, cc))})
	if err := r.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 2
	}
	out("READY\n")
	select {} // until killed
}

// crashEvent is one event as the file holds it.
type crashEvent struct {
	tag        string
	round, seq int
}

func parseEvent(line []byte) (crashEvent, error) {
	var m struct{ K string }
	if err := json.Unmarshal(line, &m); err != nil {
		return crashEvent{}, fmt.Errorf("not JSON: %.120q", line)
	}
	var ev crashEvent
	parts := strings.Split(m.K, "/")
	if len(parts) != 3 {
		return crashEvent{}, fmt.Errorf("not an event of the generator: %.120q", line)
	}
	ev.tag = parts[0]
	var err1, err2 error
	ev.round, err1 = strconv.Atoi(parts[1])
	ev.seq, err2 = strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil {
		return crashEvent{}, fmt.Errorf("not an event of the generator: %.120q", line)
	}
	return ev, nil
}

// crashFiles returns the contents of the files under dir/out, by path
// relative to dir.
func crashFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join(dir, "out"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = data
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return files
}

// wantFile is the file (relative to the test's directory) the case's
// path names for ev.
func (cc crashCase) wantFile(t *testing.T, ev crashEvent) string {
	t.Helper()
	p, err := parsePath(cc.path)
	if err != nil {
		t.Fatal(err)
	}
	rec := mpack.AppendMapHeader(nil, 1)
	rec = mpack.AppendString(rec, "shard")
	rec = mpack.AppendInt(rec, int64(ev.seq%crashShards))
	_, path, err := p.render(nil, ev.tag, rec)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// checkFiles checks the complete lines of the output files (a torn last
// line is allowed only when partial is set: a child was just killed):
// every line an event, in the file the path names for it, none twice,
// each tag's events in order within a file. It returns the events.
func checkFiles(t *testing.T, dir string, cc crashCase, partial bool) map[crashEvent]bool {
	t.Helper()
	seen := map[crashEvent]bool{}
	for name, data := range crashFiles(t, dir) {
		if i := bytes.LastIndexByte(data, '\n'); i+1 != len(data) {
			if !partial {
				t.Fatalf("%s ends in a torn line: %.120q", name, data[i+1:])
			}
			data = data[:i+1]
		}
		if len(data) == 0 {
			continue
		}
		last := map[string]crashEvent{}
		for n, line := range bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'}) {
			ev, err := parseEvent(line)
			if err != nil {
				t.Fatalf("%s: line %d: %v", name, n+1, err)
			}
			if seen[ev] {
				t.Fatalf("%s: line %d: %s/%d/%d is in the files twice", name, n+1, ev.tag, ev.round, ev.seq)
			}
			seen[ev] = true
			if want := cc.wantFile(t, ev); want != name {
				t.Fatalf("%s: line %d: %s/%d/%d belongs in %s", name, n+1, ev.tag, ev.round, ev.seq, want)
			}
			if p, ok := last[ev.tag]; ok && (ev.round < p.round || ev.round == p.round && ev.seq <= p.seq) {
				t.Fatalf("%s: line %d: %s/%d/%d after %s/%d/%d", name, n+1, ev.tag, ev.round, ev.seq, p.tag, p.round, p.seq)
			}
			last[ev.tag] = ev
		}
	}
	return seen
}

// TestCrashExactlyOnce: SIGKILLs of a loaded child at random moments, and
// restarts, leave every acknowledged event in its file exactly once, in
// order, with no torn line: with a fixed path, with a file per tag, and
// with files per tag and record field, more of them than may be open.
func TestCrashExactlyOnce(t *testing.T) {
	t.Parallel()
	rounds := 14
	if s := os.Getenv("LOGSHIP_FILE_CRASH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	for _, cc := range crashCases {
		t.Run(cc.name, func(t *testing.T) {
			t.Parallel()
			testCrashExactlyOnce(t, cc, rounds)
		})
	}
}

func testCrashExactlyOnce(t *testing.T, cc crashCase, rounds int) {
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	acked := map[crashEvent]bool{}
	for round := range rounds {
		got := runCrashChild(t, dir, cc, round, rng)
		for _, a := range got {
			for j := range a.count {
				acked[crashEvent{a.tag, a.round, a.first + j}] = true
			}
		}
		checkFiles(t, dir, cc, true)
	}

	// Drain what the buffer holds, without kills, and check the files.
	buf, err := crashBroker(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), nil, nil, []pipeline.Component{crashComp("file", pipeline.KindOutput, crashOutput(dir, cc))})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var missing []crashEvent
	for {
		seen := map[crashEvent]bool{}
		for _, data := range crashFiles(t, dir) {
			for _, line := range bytes.Split(data, []byte{'\n'}) {
				if ev, err := parseEvent(line); err == nil {
					seen[ev] = true
				}
			}
		}
		missing = missing[:0]
		for ev := range acked {
			if !seen[ev] {
				missing = append(missing, ev)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged events missing from the files, e.g. %+v", len(missing), missing[0])
	}
	seen := checkFiles(t, dir, cc, false)
	if len(acked) < 1000 {
		t.Fatalf("only %d events acknowledged in %d rounds: the test did not load the output", len(acked), rounds)
	}
	files := len(crashFiles(t, dir))
	t.Logf("%d rounds, %d acknowledged events, %d in %d files, each once", rounds, len(acked), len(seen), files)
}

type crashAck struct {
	tag                 string
	round, first, count int
}

// runCrashChild runs one child and SIGKILLs it at a random moment: mostly
// while it runs, sometimes while it is still starting (and cutting the
// file back). It returns the acknowledgements the child printed.
func runCrashChild(t *testing.T, dir string, cc crashCase, round int, rng *rand.Rand) []crashAck {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round),
		crashPathEnv+"="+cc.path, crashMaxOpenEnv+"="+strconv.Itoa(cc.maxOpen))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	t.Cleanup(kill)
	ready := make(chan struct{})
	acks := make(chan []crashAck, 1)
	go func() {
		var got []crashAck
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(ready)
				continue
			}
			var a crashAck
			if n, _ := fmt.Sscanf(sc.Text(), "ACK %s %d %d %d", &a.tag, &a.round, &a.first, &a.count); n == 4 {
				got = append(got, a)
			}
		}
		acks <- got
	}()
	if round%5 == 4 {
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond) // maybe before READY
	} else {
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			kill()
			<-acks
			_ = cmd.Wait()
			t.Fatalf("round %d: child not ready: %s", round, stderr.String())
		}
		time.Sleep(time.Duration(50+rng.IntN(500)) * time.Millisecond)
	}
	kill()
	got := <-acks
	_ = cmd.Wait()
	if s := stderr.String(); s != "" {
		t.Logf("round %d: child stderr: %s", round, s)
	}
	return got
}
