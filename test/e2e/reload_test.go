package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/internal/testutil"
)

// ackClient speaks the forward protocol on one TCP connection and waits
// for each chunk's ack, as fluent-logger-golang with RequestAck does.
type ackClient struct {
	t    *testing.T
	conn net.Conn
	dec  *msgpack.Decoder
}

func dialAck(t *testing.T, addr string) *ackClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ackClient{t: t, conn: c, dec: msgpack.NewDecoder(c)}
}

// send sends one Message-mode event {"i": i} and waits for its ack.
func (c *ackClient) send(tag string, i int) error {
	chunk := fmt.Sprintf("chunk-%s-%d", tag, i)
	b, err := msgpack.Marshal([]any{tag, time.Now().Unix(), map[string]any{"i": i}, map[string]any{"chunk": chunk}})
	if err != nil {
		return err
	}
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("event %d: write: %w", i, err)
	}
	var ack map[string]string
	if err := c.dec.Decode(&ack); err != nil {
		return fmt.Errorf("event %d: reading its ack: %w", i, err)
	}
	if ack["ack"] != chunk {
		return fmt.Errorf("event %d: ack %v, want %q", i, ack, chunk)
	}
	return nil
}

// TestSIGHUPKeepsUnchangedInputRunning: a reload that changes only the
// outputs keeps the forward input running: a client's connection stays
// open and every event sent on it before, during and after the reload is
// acked and delivered once. Before, a reload stopped and drained the whole
// pipeline, closing every client connection.
func TestSIGHUPKeepsUnchangedInputRunning(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	out1 := filepath.Join(dir, "one.log")
	out2 := filepath.Join(dir, "two.log")
	cfg := filepath.Join(dir, "agent.yaml")
	data := filepath.Join(dir, "data")
	writeFile(t, cfg, forwardAgentConfig(data, addr, "", out1))
	p := start(t, "agent", "-c", cfg)
	waitListening(t, addr)

	c := dialAck(t, addr)
	const n = 300
	sent := 0
	for ; sent < 100; sent++ {
		if err := c.send("app.reload", sent); err != nil {
			t.Fatal(err)
		}
	}
	// Same input block, a second output: the input must not restart.
	two := forwardAgentConfig(data, addr, "", out1) + fmt.Sprintf(`
  - type: file
    name: second
    match: "**"
    path: %s
    tag_key: tag
`, out2)
	writeFile(t, cfg, two)
	p.signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for ; sent < n; sent++ {
		if err := c.send("app.reload", sent); err != nil {
			t.Fatalf("the reload broke the client's connection: %v", err)
		}
		if sent == 200 { // reload applied by now: the second output gets data
			testutil.CheckFor(t, 10*time.Second, func() error {
				if !strings.Contains(p.Log(), "config reloaded") {
					return fmt.Errorf("reload not applied yet")
				}
				return nil
			})
		}
		if time.Now().After(deadline) {
			t.Fatal("too slow")
		}
	}
	if strings.Contains(p.Log(), "input stopped by reload") {
		t.Fatal("the unchanged forward input was restarted by the reload")
	}
	got := waitTagCount(t, out1, "app.reload", n)
	if len(got) != n {
		t.Fatalf("first output: %d events, want %d", len(got), n)
	}
	// The new output reads the buffer from its start: every event once.
	waitTagCount(t, out2, "app.reload", n)
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
