package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"

	"github.com/logship/logship/internal/testutil"
)

func forwardAgentConfig(dataDir, listen, extra, outPath string) string {
	return agentConfig(dataDir, "", fmt.Sprintf(`
  - type: forward
    name: fwd
    listen: %s
%s`, listen, extra), outPath)
}

func peersDir(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs("../peers/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// needNode skips (saying why) when node or an npm package is missing.
func needNode(t *testing.T, pkg string) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("SKIP: node not found; install Node.js and run scripts/install-peers.sh")
	}
	if _, err := os.Stat(filepath.Join(peersDir(t), pkg)); err != nil {
		t.Skipf("SKIP: npm package %s not installed; run scripts/install-peers.sh", pkg)
	}
}

func runPeer(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+peersDir(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func startForwardAgent(t *testing.T, extra string) (addr, out string, p *proc) {
	t.Helper()
	dir := t.TempDir()
	addr = testutil.FreeAddr(t)
	out = filepath.Join(dir, "out.log")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, forwardAgentConfig(filepath.Join(dir, "data"), addr, extra, out))
	p = start(t, "agent", "-c", cfg)
	waitListening(t, addr)
	return addr, out, p
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	testutil.CheckFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

func byTag(t *testing.T, path string) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, l := range readJSONLines(t, path) {
		tag, _ := l["tag"].(string)
		out[tag] = append(out[tag], l)
	}
	return out
}

func waitTagCount(t *testing.T, path, tag string, n int) []map[string]any {
	t.Helper()
	var got []map[string]any
	testutil.CheckFor(t, 20*time.Second, func() error {
		got = byTag(t, path)[tag]
		if len(got) < n {
			return fmt.Errorf("%s: %d of %d events", tag, len(got), n)
		}
		return nil
	})
	if len(got) != n {
		t.Fatalf("%s: %d events, want %d", tag, len(got), n)
	}
	seen := map[int]bool{}
	for _, l := range got {
		i := int(l["i"].(float64))
		if seen[i] {
			t.Fatalf("%s: i=%d twice", tag, i)
		}
		seen[i] = true
	}
	return got
}

// TestForwardFluentOrgLogger: npm @fluent-org/logger in all four modes
// with acks, and with the shared-key handshake.
func TestForwardFluentOrgLogger(t *testing.T) {
	needNode(t, "@fluent-org/logger")
	addr, out, _ := startForwardAgent(t, "")
	_, port, _ := net.SplitHostPort(addr)
	for _, mode := range []string{"Message", "Forward", "PackedForward", "CompressedPackedForward"} {
		runPeer(t, "node", "testdata/fluent-org-client.js", port, mode, "300", "node."+mode)
	}
	for _, mode := range []string{"Message", "Forward", "PackedForward", "CompressedPackedForward"} {
		got := waitTagCount(t, out, "node."+mode, 300)
		if got[0]["msg"] != "héllo from node" || got[0]["mode"] != mode {
			t.Fatalf("record %v", got[0])
		}
	}
	addr2, out2, _ := startForwardAgent(t, "    shared_key: k3y\n    self_hostname: agent-host\n")
	_, port2, _ := net.SplitHostPort(addr2)
	runPeer(t, "node", "testdata/fluent-org-client.js", port2, "PackedForward", "200", "node.auth", "k3y")
	waitTagCount(t, out2, "node.auth", 200)
}

// TestForwardNpmFluentLogger: npm fluent-logger with requireAckResponse in
// its three modes.
func TestForwardNpmFluentLogger(t *testing.T) {
	needNode(t, "fluent-logger")
	addr, out, _ := startForwardAgent(t, "")
	_, port, _ := net.SplitHostPort(addr)
	for _, mode := range []string{"Message", "PackedForward", "CompressedPackedForward"} {
		runPeer(t, "node", "testdata/fluent-logger-client.js", port, mode, "250", "npm."+mode)
	}
	for _, mode := range []string{"Message", "PackedForward", "CompressedPackedForward"} {
		waitTagCount(t, out, "npm."+mode, 250)
	}
}

// TestForwardPythonFluentLogger: Debian's python3-fluent-logger with int,
// float and EventTime times; the float's fraction survives.
func TestForwardPythonFluentLogger(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import fluent.sender").Run(); err != nil {
		t.Skip("SKIP: python3-fluent-logger not installed (apt-get install python3-fluent-logger, or scripts/install-peers.sh)")
	}
	addr, out, _ := startForwardAgent(t, "")
	_, port, _ := net.SplitHostPort(addr)
	for _, form := range []string{"int", "float", "nanosecond"} {
		runPeer(t, py, "testdata/python-client.py", port, "150", "py."+form, form)
	}
	for _, form := range []string{"int", "float", "nanosecond"} {
		got := waitTagCount(t, out, "py."+form, 150)
		ts, _ := got[0]["time"].(string)
		frac := ts[strings.LastIndexByte(ts, '.')+1:]
		switch form {
		case "int":
			if !strings.HasPrefix(frac, "000000000") {
				t.Errorf("int time %s has a fraction", ts)
			}
		case "float":
			if strings.HasPrefix(frac, "000000000") {
				t.Errorf("float time %s lost its fraction", ts)
			}
		}
	}
}

// TestForwardSIGKILLNoAckedLoss: a client that got its ack never loses the
// event, even when the agent is killed with SIGKILL mid-stream and
// restarted on the same data_dir; and the agent adds no duplicate of its
// own: an event is in the file twice only if the client posted it again
// after a failed Post (a new chunk id: the client's at-least-once).
func TestForwardSIGKILLNoAckedLoss(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	out := filepath.Join(dir, "out.log")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, forwardAgentConfig(filepath.Join(dir, "data"), addr, "", out))
	host, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)

	var mu sync.Mutex
	acked := map[int]bool{}
	var reposts atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lg *fluent.Fluent
			for i := w; ; {
				select {
				case <-stop:
					if lg != nil {
						lg.Close()
					}
					return
				default:
				}
				if lg == nil {
					var err error
					lg, err = fluent.New(fluent.Config{FluentHost: host, FluentPort: port, RequestAck: true, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetry: 0, Timeout: time.Second, SubSecondPrecision: true})
					if err != nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
				}
				if err := lg.Post("kill.test", map[string]any{"i": i, "pad": strings.Repeat("x", 100)}); err != nil {
					reposts.Add(1)
					lg.Close()
					lg = nil
					time.Sleep(20 * time.Millisecond)
					continue // not acked: resent with the same i
				}
				mu.Lock()
				acked[i] = true
				mu.Unlock()
				i += 4
			}
		}()
	}
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for round := range 3 {
		p := start(t, "agent", "-c", cfg)
		waitListening(t, addr)
		t.Logf("round %d: listening at %s", round, time.Now().Format("15:04:05.000"))
		before := ackedCount()
		testutil.CheckFor(t, 20*time.Second, func() error {
			if n := ackedCount(); n < before+300 {
				return fmt.Errorf("round %d: %d acked", round, n-before)
			}
			return nil
		})
		p.signal(syscall.SIGKILL)
		p.wait(5 * time.Second)
		t.Logf("round %d: killed at %s with %d acked", round, time.Now().Format("15:04:05.000"), ackedCount())
	}
	p := start(t, "agent", "-c", cfg)
	waitListening(t, addr)
	close(stop)
	wg.Wait()
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	testutil.CheckFor(t, 20*time.Second, func() error {
		seen := map[int]bool{}
		for _, l := range readJSONLines(t, out) {
			seen[int(l["i"].(float64))] = true
		}
		missing := 0
		for i := range acked {
			if !seen[i] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d acked events missing", missing, want)
		}
		return nil
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := readJSONLines(t, out)
	times := map[int]int{}
	for _, l := range lines {
		times[int(l["i"].(float64))]++
	}
	dups := len(lines) - len(times)
	t.Logf("%d acked events survived 3 SIGKILLs; %d lines written, %d duplicates; the client posted %d events again after a failed Post", want, len(lines), dups, reposts.Load())
	if int64(dups) > reposts.Load() {
		t.Fatalf("%d duplicates, more than the %d events the client posted twice", dups, reposts.Load())
	}
}
