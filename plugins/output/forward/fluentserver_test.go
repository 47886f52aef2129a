package forward

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

// nodePeer is npm @fluent-org/logger's FluentServer run by
// testdata/fluent_server.js: a real third-party forward receiver.
type nodePeer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte
	stderr bytes.Buffer
	port   int
}

// startNodePeer starts the FluentServer, or skips the test when node or
// the npm package is missing.
func startNodePeer(t *testing.T, args ...string) *nodePeer {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("SKIP: node is not installed, so the @fluent-org/logger FluentServer peer cannot run")
	}
	modules, err := filepath.Abs(filepath.Join("..", "..", "..", "test", "peers", "node_modules"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(modules, "@fluent-org", "logger", "package.json")); err != nil {
		t.Skipf("SKIP: npm @fluent-org/logger is not installed under %s (scripts/install-peers.sh installs it)", modules)
	}
	p := &nodePeer{lines: make(chan []byte, 1024)}
	p.cmd = exec.Command(node, append([]string{filepath.Join("testdata", "fluent_server.js")}, args...)...)
	p.cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close() // the script exits when stdin closes
		exited := make(chan struct{})
		go func() {
			for range p.lines { // drain, so the reader can finish
			}
			<-readerDone
			_ = p.cmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case line, ok := <-p.lines:
		var hello struct{ Port int }
		if !ok || json.Unmarshal(line, &hello) != nil || hello.Port == 0 {
			t.Fatalf("FluentServer did not start: %q, stderr: %s", line, p.stderr.String())
		}
		p.port = hello.Port
	case <-time.After(10 * time.Second):
		t.Fatalf("FluentServer did not start within 10s; stderr: %s", p.stderr.String())
	}
	return p
}

type nodeEvent struct {
	Tag    string
	Time   int64
	Record struct {
		Seq int
		Log string
	}
}

// TestFluentServerPeer delivers to a real @fluent-org/logger FluentServer
// with acks, compressed or not, with a shared key and with a user.
func TestFluentServerPeer(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		compress string
		mod      func(*Config)
	}{
		{"acks", nil, "none", nil},
		{"acks gzip", nil, "gzip", nil},
		{"shared key", []string{"--shared-key", "n0de-key"}, "gzip", func(c *Config) { c.SharedKey = "n0de-key" }},
		{"shared key and user", []string{"--shared-key", "n0de-key", "--user", "agent:pw"}, "none", func(c *Config) {
			c.SharedKey, c.Username, c.Password = "n0de-key", "agent", "pw"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer := startNodePeer(t, tc.args...)
			o := newOutput(t, t.TempDir(), nil, func(c *Config) {
				c.Servers = []string{fmt.Sprintf("127.0.0.1:%d", peer.port)}
				c.Compress = tc.compress
				if tc.mod != nil {
					tc.mod(c)
				}
			})
			bs := batches(3, 4, 25)
			deliverAll(t, o, bs, 15*time.Second)
			if testutil.Value(o.m.acks) != float64(len(bs)) {
				t.Fatalf("acks_total %v, want %d", testutil.Value(o.m.acks), len(bs))
			}
			want := map[string]int{}
			for _, b := range bs {
				want[b.Tag] = b.Count
			}
			got := map[string]int{}
			deadline := time.After(10 * time.Second)
			for n := 0; n < len(bs)*25; n++ {
				select {
				case line, ok := <-peer.lines:
					if !ok {
						t.Fatalf("FluentServer exited; stderr: %s", peer.stderr.String())
					}
					var ev nodeEvent
					if err := json.Unmarshal(line, &ev); err != nil {
						t.Fatalf("line %q: %v", line, err)
					}
					if _, ok := want[ev.Tag]; !ok || ev.Time != 1_700_000_000+int64(ev.Record.Seq) || len(ev.Record.Log) != 20 {
						t.Fatalf("unexpected event %s", line)
					}
					got[ev.Tag]++
				case <-deadline:
					t.Fatalf("only %d of %d events reached the FluentServer", n, len(bs)*25)
				}
			}
			for tag, n := range want {
				if got[tag] != n {
					t.Fatalf("%s: %d events at the FluentServer, sent %d", tag, got[tag], n)
				}
			}
		})
	}
}
