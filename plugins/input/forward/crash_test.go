package forward

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// The crash model test re-executes the test binary as a child that runs a
// buffer (the default sync: always), the runner and a forward input with
// dedup, listening on an address the parent gives it. Senders in the parent
// send numbered chunks, each with its own chunk id, and resend a chunk with
// the same id until it is acknowledged, as fluent-logger and logship's
// forward output do; the parent SIGKILLs the child at random moments and
// starts it again on the same data_dir. At the end the buffer holds every
// chunk exactly once.

const (
	fwdCrashDirEnv  = "LOGSHIP_FORWARD_CRASH_DIR"
	fwdCrashAddrEnv = "LOGSHIP_FORWARD_CRASH_ADDR"
)

func init() {
	// Before TestMain: the child never runs tests.
	if dir := os.Getenv(fwdCrashDirEnv); dir != "" {
		os.Exit(fwdCrashChild(dir, os.Getenv(fwdCrashAddrEnv)))
	}
}

func fwdCrashBroker(dir string) (*broker.Broker, error) {
	return broker.Open(filepath.Join(dir, "buffer"), broker.WithPartitions(2), broker.WithSegmentBytes(256<<10))
}

func fwdCrashChild(dir, addr string) int {
	buf, err := fwdCrashBroker(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open buffer:", err)
		return 2
	}
	cfg := defaultConfig()
	cfg.Listen = addr
	cfg.Heartbeat = false
	set := pipeline.Settings{Name: "fwd", Type: "forward", DataDir: dir, Logger: zap.NewNop(), Metrics: pipeline.NopMetrics(pipeline.KindInput, "fwd")}
	in, err := New(set, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "new:", err)
		return 2
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{{Name: "fwd", Type: "forward", Kind: pipeline.KindInput, Instance: pipeline.Instance{Input: in}, Metrics: set.Metrics}}, nil, nil)
	if err := r.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 2
	}
	fmt.Println("READY")
	select {} // until killed
}

// fwdSender sends chunks "s<k>-<n>" of 1 to 5 events "k/n/j" on its own
// connection, one at a time, resending each (same id, same bytes) until
// it is acknowledged, until quit is set; it returns how many it sent.
func fwdSender(k int, quit *atomic.Bool, addr *atomic.Value, stop <-chan struct{}) (int, error) {
	rng := rand.New(rand.NewPCG(uint64(k), 3))
	var c net.Conn
	var rd *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	n := 0
	// a chunk once sent is resent until acknowledged, quit or not: it may
	// be stored already
	for tried := false; tried || !quit.Load(); {
		select {
		case <-stop:
			return n, fmt.Errorf("sender %d stopped at chunk %d", k, n)
		default:
		}
		id := fmt.Sprintf("s%d-%d", k, n)
		events := 1 + (n*7+k)%5
		var entries []byte
		for j := range events {
			rec := mpack.AppendMapHeader(nil, 1)
			rec = mpack.AppendString(rec, "e")
			rec = mpack.AppendString(rec, fmt.Sprintf("%d/%d/%d", k, n, j))
			entries = mpack.AppendEntry(entries, mpack.EventTime{Sec: 1_700_000_000}, rec)
		}
		req, err := msgpack.Marshal([]any{fmt.Sprintf("crash.%d", k), entries, map[string]any{"chunk": id, "size": events}})
		if err != nil {
			return n, err
		}
		if c == nil {
			c, err = net.DialTimeout("tcp", addr.Load().(string), time.Second)
			if err != nil {
				c = nil
				time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
				continue
			}
			rd = bufio.NewReader(c)
		}
		tried = true
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		var ack map[string]string
		if _, err = c.Write(req); err == nil {
			err = msgpack.NewDecoder(rd).Decode(&ack)
		}
		if err != nil || ack["ack"] != id {
			c.Close()
			c = nil
			continue // resent with the same id
		}
		n++
		tried = false
	}
	return n, nil
}

// TestCrashStoredOnce: chunks resent after SIGKILLs of the receiving
// process at random moments (before, while and after storing and
// journaling) are stored exactly once.
func TestCrashStoredOnce(t *testing.T) {
	t.Parallel()
	const (
		senders = 4
		kills   = 14 // then the senders stop
	)
	dir := t.TempDir()
	var addr atomic.Value
	addr.Store(testutil.FreeAddr(t))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var quit atomic.Bool
	errs := make(chan error, senders)
	sent := make([]int, senders)
	for k := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if sent[k], err = fwdSender(k, &quit, &addr, stop); err != nil {
				errs <- err
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			close(stop)
			<-done
		}
	}()

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 9))
	killed := 0
	for finished := false; !finished; {
		if killed == kills {
			quit.Store(true) // the senders finish their chunk in flight
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fwdCrashDirEnv+"="+dir, fwdCrashAddrEnv+"="+addr.Load().(string))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(out)
			ready <- sc.Scan() && sc.Text() == "READY"
			for sc.Scan() {
			}
		}()
		select {
		case ok := <-ready:
			if !ok {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("child did not start: %s", stderr.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child did not start in 20s: %s", stderr.String())
		}
		select {
		case <-done:
			finished = true
		case <-time.After(time.Duration(20+rng.IntN(300)) * time.Millisecond):
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if !finished {
			killed++
		}
		if killed > kills+50 {
			t.Fatal("the senders did not finish within 50 rounds after being told to")
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	buf, err := fwdCrashBroker(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	seen := map[string]int{}
	for p := range buf.Partitions() {
		err := buf.Scan(context.Background(), p, 0, func(r broker.Record) error {
			return mpack.ForEachEntry(r.Entries, func(_ mpack.EventTime, rec []byte) error {
				var m map[string]string
				if err := msgpack.Unmarshal(rec, &m); err != nil {
					return err
				}
				seen[m["e"]]++
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want, dups := 0, 0
	var missing []string
	for k := range senders {
		for n := range sent[k] {
			for j := range 1 + (n*7+k)%5 {
				want++
				e := fmt.Sprintf("%d/%d/%d", k, n, j)
				switch c := seen[e]; {
				case c == 0:
					missing = append(missing, e)
				case c > 1:
					dups += c - 1
				}
			}
		}
	}
	if len(seen) != want-len(missing) {
		t.Fatalf("%d distinct events stored, want %d", len(seen), want-len(missing))
	}
	if len(missing) > 0 || dups > 0 {
		t.Fatalf("%d kills: %d of %d events missing (e.g. %s), %d stored twice", killed, len(missing), want, strings.Join(missing[:min(3, len(missing))], " "), dups)
	}
	chunks := 0
	for _, n := range sent {
		chunks += n
	}
	if chunks < 1000 {
		t.Fatalf("only %d chunks sent in %d rounds: the test did not load the input", chunks, killed)
	}
	t.Logf("%d kills, %d chunks of %d senders (%d events) stored exactly once", killed, chunks, senders, want)
}
