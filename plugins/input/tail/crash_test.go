package tail

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// The SIGKILL test runs the input in a child process (this test binary
// again, with crashChildEnv set) whose emitter makes chunks durable the
// simplest way there is: it appends their lines to a file and fsyncs it
// before acknowledging. The parent writes and rotates logs, kills the
// child with SIGKILL at random moments, restarts it, and checks that no
// line is lost and that only lines past the checkpoint saved at a kill are
// stored twice.

const crashChildEnv = "TAIL_CRASH_CHILD"

// fileEmitter stores a chunk by appending its lines to a file, with fsync.
type fileEmitter struct {
	mu  sync.Mutex
	f   *os.File
	buf []byte
}

func (e *fileEmitter) Emit(_ context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf = e.buf[:0]
	err := mpack.ForEachEntry(c.Entries, func(_ mpack.EventTime, record []byte) error {
		var m map[string]any
		if err := msgpack.Unmarshal(record, &m); err != nil {
			return err
		}
		e.buf = append(e.buf, fmt.Sprint(m["log"])...)
		e.buf = append(e.buf, '\n')
		return nil
	})
	if err == nil {
		_, err = e.f.Write(e.buf)
	}
	if err == nil {
		err = e.f.Sync()
	}
	ack(err)
	return nil
}

func crashChild() int {
	if os.Getenv("TAIL_BUF") != "" {
		return exactChild()
	}
	out, err := os.OpenFile(os.Getenv("TAIL_OUT"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := defaultConfig()
	cfg.Paths = []string{filepath.Join(os.Getenv("TAIL_LOGS"), "*.log")}
	cfg.RefreshInterval = conftypes.Duration(50 * time.Millisecond)
	cfg.RotateWait = conftypes.Duration(300 * time.Millisecond)
	cfg.ReadFromHead = true
	cfg.Batch.MaxEvents = 50
	cfg.Batch.FlushInterval = 0
	set := pipeline.Settings{Name: "tail.test", Type: "tail", DataDir: os.Getenv("TAIL_DATA"), Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "tail.test")}
	in, err := New(set, cfg)
	if err == nil {
		err = in.Start(context.Background(), &fileEmitter{f: out})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("started")
	time.Sleep(2 * time.Minute) // SIGKILL comes long before
	return 3
}

// crashGen is one physical log file the parent wrote.
type crashGen struct {
	id     int
	ino    uint64
	f      *os.File
	starts []int64 // start offset of each line
	size   int64
	born   time.Time
	lines  []string
}

const crashLineLen = 64

func (g *crashGen) write(t *testing.T, n int) {
	var b bytes.Buffer
	for range n {
		l := fmt.Sprintf("g%03d-%06d-", g.id, len(g.lines))
		l += strings.Repeat("x", crashLineLen-1-len(l))
		g.starts = append(g.starts, g.size+int64(b.Len()))
		g.lines = append(g.lines, l)
		b.WriteString(l + "\n")
	}
	if _, err := g.f.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	g.size += int64(b.Len())
}

type crashKill struct {
	outLen int64
	ckpts  map[uint64]int64 // inode -> saved offset
}

func TestSIGKILLRestart(t *testing.T) {
	rounds := 6
	if testing.Short() {
		rounds = 3
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	logs, data := t.TempDir(), t.TempDir()
	outPath := filepath.Join(t.TempDir(), "out")

	var gens []*crashGen
	current := map[string]*crashGen{}
	rotated := 0
	newGen := func(name string) {
		f, err := os.OpenFile(filepath.Join(logs, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		g := &crashGen{id: len(gens), ino: fileKeyOf(fi).ino, f: f, born: time.Now()}
		gens = append(gens, g)
		current[name] = g
	}
	defer func() {
		for _, g := range gens {
			g.f.Close()
		}
	}()
	for _, n := range []string{"a.log", "b.log"} {
		newGen(n)
		current[n].write(t, 20)
	}

	startChild := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", "TAIL_LOGS="+logs, "TAIL_DATA="+data, "TAIL_OUT="+outPath)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if l, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || l != "started\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child did not start: %q %v %s", l, err, stderr.String())
		}
		return cmd, &stderr
	}
	kill := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	snapshot := func() crashKill {
		k := crashKill{ckpts: map[uint64]int64{}}
		if fi, err := os.Stat(outPath); err == nil {
			k.outLen = fi.Size()
		}
		b, err := os.ReadFile(filepath.Join(data, "input", "tail.test", "checkpoints.json"))
		if err == nil {
			var cf checkpointFile
			if err := json.Unmarshal(b, &cf); err != nil {
				t.Fatalf("checkpoints.json torn: %v", err)
			}
			for _, c := range cf.Files {
				k.ckpts[c.Ino] = c.Offset
			}
		}
		return k
	}

	var kills []crashKill
	for round := range rounds {
		cmd, _ := startChild()
		started := time.Now()
		life := time.Duration(200+rng.IntN(1300)) * time.Millisecond
		for time.Since(started) < life {
			names := []string{"a.log", "b.log"}
			name := names[rng.IntN(2)]
			g := current[name]
			// Rotate only a file the child has had time to find: one
			// renamed away before anyone saw it is lost by nature.
			if rng.IntN(15) == 0 && time.Since(g.born) > 300*time.Millisecond && time.Since(started) > 300*time.Millisecond {
				rotated++
				if err := os.Rename(filepath.Join(logs, name), filepath.Join(logs, fmt.Sprintf("%s.%d", name, rotated))); err != nil {
					t.Fatal(err)
				}
				g.write(t, rng.IntN(5)) // the writer has not reopened yet
				newGen(name)
				g = current[name]
			}
			g.write(t, 1+rng.IntN(20))
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond) // the writer's pace
		}
		kill(cmd)
		k := snapshot()
		kills = append(kills, k)
		// The checkpoint never runs ahead of what is durable.
		out := readOut(t, outPath, k.outLen)
		for _, g := range gens {
			off, ok := k.ckpts[g.ino]
			if !ok {
				continue
			}
			for i, l := range g.lines {
				end := g.starts[i] + crashLineLen
				if end <= off && out[l] == 0 {
					t.Fatalf("round %d: checkpoint of gen %d at %d passed line %q, which is not stored", round, g.id, off, l)
				}
			}
		}
	}

	// A last run reads everything.
	cmd, stderr := startChild()
	var total int
	for _, g := range gens {
		total += len(g.lines)
	}
	testutil.CheckFor(t, 30*time.Second, func() error {
		out := readOut(t, outPath, -1)
		for _, g := range gens {
			for _, l := range g.lines {
				if out[l] == 0 {
					return fmt.Errorf("%q not stored (%d of %d lines stored)", l, len(out), total)
				}
			}
		}
		return nil
	})
	kill(cmd)
	if stderr.Len() > 0 {
		t.Logf("child stderr: %s", stderr.String())
	}

	// Duplicates only where a restart had to read again: past the
	// checkpoint saved when the process was killed.
	first := firstOccurrence(t, outPath)
	out := readOut(t, outPath, -1)
	dups := 0
	for _, g := range gens {
		for i, l := range g.lines {
			if out[l] < 2 {
				continue
			}
			dups += out[l] - 1
			allowed := false
			for _, k := range kills {
				off, ok := k.ckpts[g.ino]
				if first[l] < k.outLen && (!ok || g.starts[i] >= off) {
					allowed = true
					break
				}
			}
			if !allowed {
				t.Errorf("%q stored %d times, though it was before every saved checkpoint", l, out[l])
			}
		}
	}
	t.Logf("%d generations, %d lines, %d kills, %d duplicates", len(gens), total, len(kills), dups)
}

// readOut counts the stored lines among the first n bytes (n < 0: all).
func readOut(t *testing.T, path string, n int64) map[string]int {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if n >= 0 && int64(len(b)) > n {
		b = b[:n]
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" {
			continue
		}
		if len(l) != crashLineLen-1 {
			t.Fatalf("torn or foreign line in the output: %q", l)
		}
		out[l]++
	}
	return out
}

func firstOccurrence(t *testing.T, path string) map[string]int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]int64{}
	var off int64
	for _, l := range strings.SplitAfter(string(b), "\n") {
		k := strings.TrimSuffix(l, "\n")
		if _, ok := first[k]; !ok {
			first[k] = off
		}
		off += int64(len(l))
	}
	return first
}
