package tail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/pipeline"
)

// The exactly-once test runs the tail input in a child process (this test
// binary again, with crashChildEnv and TAIL_BUF set) into a real buffer
// (broker, SyncAlways, two partitions) through the pipeline's runner, so
// that chunks carry their source positions. The parent appends to the
// logs, rotates them (rename and a new file, copytruncate), SIGKILLs the
// child at random moments (some right after a record became durable, some
// right after a rotation) and starts it again; at the end it reads the
// buffer back and wants every line once, in order per file.

// exactChild is the child: the tail input, a runner, a buffer. SIGTERM
// stops it cleanly; SIGKILL is the point.
func exactChild() int {
	bufOpts := []broker.Option{broker.WithPartitions(2), broker.WithSync(broker.SyncAlways)}
	buf, err := broker.Open(os.Getenv("TAIL_BUF"), bufOpts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := defaultConfig()
	cfg.Paths = []string{filepath.Join(os.Getenv("TAIL_LOGS"), "*.log")}
	cfg.Tag = "t.*"
	cfg.RefreshInterval = conftypes.Duration(50 * time.Millisecond)
	cfg.RotateWait = conftypes.Duration(300 * time.Millisecond)
	cfg.ReadFromHead = true
	cfg.Batch.MaxEvents, _ = strconv.Atoi(os.Getenv("TAIL_BATCH"))
	cfg.Batch.FlushInterval = 0
	name := "tail.test"
	log := zap.NewNop()
	if os.Getenv("TAIL_CHILD_LOG") != "" {
		log, _ = zap.NewDevelopment()
	}
	set := pipeline.Settings{Name: name, Type: "tail", DataDir: os.Getenv("TAIL_DATA"), Logger: log, Metrics: pipeline.NopMetrics(pipeline.KindInput, name)}
	in, err := New(set, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r := pipeline.NewRunner(buf, log, []pipeline.Component{{Name: name, Type: "tail", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: set.Metrics}}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("started")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case <-term:
	case <-time.After(2 * time.Minute):
		return 3
	}
	err = r.Stop(context.Background())
	if cerr := buf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

// exactGen is one content of a log file: a file's lines from its creation
// or its last truncation.
type exactGen struct {
	id    int
	name  string // the matched name it was written under
	ino   uint64
	f     *os.File
	head  []byte // its first fingerprintBytes bytes
	lines []string
	size  int64
}

func (g *exactGen) write(t *testing.T, n int) {
	var b bytes.Buffer
	for range n {
		l := fmt.Sprintf("g%03d-%06d-", g.id, len(g.lines))
		l += strings.Repeat("y", crashLineLen-1-len(l))
		g.lines = append(g.lines, l)
		b.WriteString(l + "\n")
	}
	if _, err := g.f.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if len(g.head) < fingerprintBytes {
		g.head = append(g.head, b.Bytes()[:min(b.Len(), fingerprintBytes-len(g.head))]...)
	}
	g.size += int64(b.Len())
}

// TestSIGKILLExactlyOnce: with the positions stored in the buffer, a
// SIGKILL makes the tail read nothing twice and lose nothing, across
// rotations by rename, copytruncate, and rotations while it is down.
func TestSIGKILLExactlyOnce(t *testing.T) {
	t.Parallel()
	rounds := 14
	if testing.Short() {
		rounds = 8
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("TAIL_EXACT_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (TAIL_EXACT_SEED replays the choices)", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	logs, data, bufDir := t.TempDir(), t.TempDir(), t.TempDir()
	batch := 1 + rng.IntN(30)

	var gens []*exactGen
	current := map[string]*exactGen{}
	rotations := 0
	newGen := func(name string, f *os.File) {
		if f == nil {
			var err error
			f, err = os.OpenFile(filepath.Join(logs, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
		}
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		g := &exactGen{id: len(gens), name: name, ino: fileKeyOf(fi).ino, f: f}
		gens = append(gens, g)
		current[name] = g
	}
	t.Cleanup(func() {
		for _, g := range gens {
			g.f.Close()
		}
	})
	names := []string{"a.log", "b.log", "c.log"}
	for _, n := range names {
		newGen(n, nil)
		current[n].write(t, 10)
	}

	var child *exec.Cmd
	t.Cleanup(func() {
		if child != nil {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	})
	start := func() *bytes.Buffer {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", "TAIL_LOGS="+logs, "TAIL_DATA="+data, "TAIL_BUF="+bufDir, "TAIL_BATCH="+strconv.Itoa(batch))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		child = cmd
		if l, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || l != "started\n" {
			t.Fatalf("child did not start: %q %v %s", l, err, stderr.String())
		}
		return &stderr
	}
	stop := func(sig syscall.Signal) {
		_ = child.Process.Signal(sig)
		_ = child.Wait()
		child = nil
	}
	// known reports whether the saved checkpoints know g's content (its
	// whole fingerprint when full is set): a rotation of a file nobody saw
	// leaves nothing to follow, by nature.
	known := func(g *exactGen, full bool) bool {
		b, err := os.ReadFile(filepath.Join(data, "input", "tail.test", "checkpoints.json"))
		if err != nil {
			return false
		}
		var cf checkpointFile
		if err := json.Unmarshal(b, &cf); err != nil {
			t.Fatalf("checkpoints.json torn: %v", err)
		}
		for _, c := range cf.Files {
			if c.Ino == g.ino && c.FPLen > 0 && c.FPLen <= len(g.head) && fnv1a(g.head[:c.FPLen]) == c.FP {
				return !full || c.FPLen == fingerprintBytes
			}
		}
		return false
	}
	bufSize := func() int64 {
		var n int64
		_ = filepath.WalkDir(bufDir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		return n
	}
	// rotate renames name away (the writer writes a few more lines to the
	// old file) or copies and truncates it; false if its content is not
	// known yet.
	rotate := func(name string, copyTruncate bool) bool {
		g := current[name]
		if !known(g, copyTruncate) {
			return false
		}
		rotations++
		p := filepath.Join(logs, name)
		if copyTruncate {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(fmt.Sprintf("%s.c%d", p, rotations), b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := g.f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			newGen(name, g.f)
			return true
		}
		if err := os.Rename(p, fmt.Sprintf("%s.%d", p, rotations)); err != nil {
			t.Fatal(err)
		}
		g.write(t, rng.IntN(4))
		newGen(name, nil)
		return true
	}
	var copies, renames int
	writeSome := func() {
		name := names[rng.IntN(len(names))]
		switch r := rng.IntN(200); {
		case r == 0 || r == 1 && copies == 0:
			if rotate(name, true) {
				copies++
			}
		case r < 5:
			if rotate(name, false) {
				renames++
			}
		}
		current[name].write(t, 1+rng.IntN(12))
	}

	kinds := map[string]int{}
	for round := range rounds {
		start()
		began := time.Now()
		life := time.Duration(150+rng.IntN(700)) * time.Millisecond
		kind := []string{"random", "after_ack", "after_rotation"}[rng.IntN(3)]
		for time.Since(began) < life {
			writeSome()
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		}
		switch kind {
		case "after_ack":
			// Right after a record was made durable (and acked): the
			// checkpoint file does not have it yet.
			n0 := bufSize()
			current[names[rng.IntN(len(names))]].write(t, batch)
			for deadline := time.Now().Add(time.Second); bufSize() == n0 && time.Now().Before(deadline); {
				time.Sleep(200 * time.Microsecond)
			}
		case "after_rotation":
			name := names[rng.IntN(len(names))]
			if !rotate(name, rng.IntN(2) == 0) {
				kind = "random"
			}
			current[name].write(t, 1+rng.IntN(12))
			time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		}
		kinds[kind]++
		stop(syscall.SIGKILL)
		// While it is down: more lines, and sometimes a rotation.
		for range rng.IntN(4) {
			writeSome()
		}
		_ = round
	}

	// A last run reads everything and stops cleanly; then the buffer is
	// read back.
	var got map[int][]int
	var stderr *bytes.Buffer
	for attempt := 0; ; attempt++ {
		stderr = start()
		time.Sleep(1500 * time.Millisecond)
		stop(syscall.SIGTERM)
		got = readExactBuffer(t, bufDir)
		missing := 0
		for _, g := range gens {
			missing += max(len(g.lines)-len(got[g.id]), 0)
		}
		if missing == 0 || attempt == 4 {
			break
		}
	}
	if stderr.Len() > 0 {
		t.Logf("child stderr: %s", stderr.String())
	}
	total, dups := 0, 0
	for _, g := range gens {
		total += len(g.lines)
		seq := got[g.id]
		seen := map[int]int{}
		for _, i := range seq {
			seen[i]++
		}
		for i, n := range seen {
			if n > 1 {
				dups += n - 1
				if dups < 10 {
					t.Errorf("gen %d (%s) line %d stored %d times", g.id, g.name, i, n)
				}
			}
		}
		missing := 0
		for i := range g.lines {
			if seen[i] == 0 {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("gen %d (%s): %d of %d lines missing", g.id, g.name, missing, len(g.lines))
			continue
		}
		for i := 1; i < len(seq) && dups == 0; i++ {
			if seq[i] != seq[i-1]+1 {
				t.Errorf("gen %d (%s) out of order at %d: %v", g.id, g.name, i, seq[max(i-3, 0):min(i+3, len(seq))])
				break
			}
		}
	}
	t.Logf("%d generations, %d lines, %d kills %v, %d renames, %d copytruncates, batch %d, %d duplicates",
		len(gens), total, rounds, kinds, renames, copies, batch, dups)
	if dups > 0 {
		t.Errorf("%d lines stored more than once", dups)
	}
}

// readExactBuffer reads every record of the buffer in bufDir: per
// generation, the indexes of its lines in buffer order.
func readExactBuffer(t *testing.T, bufDir string) map[int][]int {
	t.Helper()
	buf, err := broker.Open(bufDir, broker.WithPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	out := map[int][]int{}
	for p := range buf.Partitions() {
		err := buf.Scan(context.Background(), p, 0, func(r broker.Record) error {
			return mpack.ForEachEntry(r.Entries, func(_ mpack.EventTime, record []byte) error {
				var m map[string]any
				if err := msgpack.Unmarshal(record, &m); err != nil {
					return err
				}
				l, _ := m["log"].(string)
				var g, i int
				if _, err := fmt.Sscanf(l, "g%03d-%06d-", &g, &i); err != nil || len(l) != crashLineLen-1 {
					return fmt.Errorf("foreign line %q", l)
				}
				out[g] = append(out[g], i)
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}
