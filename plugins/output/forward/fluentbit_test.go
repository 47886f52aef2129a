package forward

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
	fwdin "github.com/logship/logship/plugins/input/forward"
)

// fluentBitHeloFixture is a HELO captured from Fluent Bit 5.1.1's
// in_forward with shared_key set and no users (see FLUENT-BIT.md).
const fluentBitHeloFixture = "testdata/fluentbit-5.1.1-helo.bin"

// fluentBitHelo returns the HELO Fluent Bit 5.1's in_forward sends (its
// send_helo in plugins/in_forward/fw_prot.c): ["HELO", {"nonce": str of 16
// random bytes, "auth": str of 16 random bytes}], a map of two, no
// keepalive key, and an auth salt although no user is configured.
func fluentBitHelo(nonce, auth []byte) []byte {
	b := []byte{0x92, 0xa4, 'H', 'E', 'L', 'O', 0x82}
	b = append(append(b, 0xa5, 'n', 'o', 'n', 'c', 'e', 0xb0), nonce...)
	return append(append(b, 0xa4, 'a', 'u', 't', 'h', 0xb0), auth...)
}

// heloLikeFluentBit returns a function giving the HELO bytes to send on
// each connection and the nonce and auth salt they carry: the captured
// fixture when it is there, else bytes built from the shape of Fluent
// Bit's source with fresh random values.
func heloLikeFluentBit(t *testing.T) func() ([]byte, forwardproto.Helo) {
	t.Helper()
	if fix, err := os.ReadFile(fluentBitHeloFixture); err == nil {
		h, err := forwardproto.NewDecoder(bytes.NewReader(fix), forwardproto.Limits{}).NextHelo()
		if err != nil {
			t.Fatalf("%s: %v", fluentBitHeloFixture, err)
		}
		if len(h.Nonce) != 16 || len(h.Auth) != 16 || !bytes.Equal(fluentBitHelo(h.Nonce, h.Auth), fix) {
			t.Fatalf("%s (% x) is not the HELO shape this test builds without it", fluentBitHeloFixture, fix)
		}
		return func() ([]byte, forwardproto.Helo) { return fix, h }
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	t.Logf("%s not there: sending a HELO built from Fluent Bit's source", fluentBitHeloFixture)
	return func() ([]byte, forwardproto.Helo) {
		h := forwardproto.Helo{Nonce: make([]byte, 16), Auth: make([]byte, 16), Keepalive: true}
		_, _ = rand.Read(h.Nonce)
		_, _ = rand.Read(h.Auth)
		return fluentBitHelo(h.Nonce, h.Auth), h
	}
}

// fakeFluentBit answers like Fluent Bit's in_forward with shared_key and
// no users: HELO with an auth salt, checks the shared key digest only (it
// has no users to check), PONG, and acks every chunk. It records the PINGs.
type fakeFluentBit struct {
	ln    net.Listener
	key   string
	mu    sync.Mutex
	pings []forwardproto.Ping
	helos []forwardproto.Helo
	wg    sync.WaitGroup
}

func newFakeFluentBit(t *testing.T, key string) *fakeFluentBit {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFluentBit{ln: ln, key: key}
	helo := heloLikeFluentBit(t)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			frame, h := helo()
			f.wg.Add(1)
			go f.serve(c, frame, h)
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *fakeFluentBit) serve(c net.Conn, helo []byte, h forwardproto.Helo) {
	defer f.wg.Done()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(helo); err != nil {
		return
	}
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	ping, err := dec.NextPing()
	if err != nil {
		return
	}
	f.mu.Lock()
	f.pings = append(f.pings, ping)
	f.helos = append(f.helos, h)
	f.mu.Unlock()
	// Fluent Bit checks the shared key digest, and users only if it has any.
	err = forwardproto.VerifyPing(ping, forwardproto.Helo{Nonce: h.Nonce}, f.key, nil)
	if _, werr := c.Write(forwardproto.AppendPong(nil, h, ping, "fluent-bit", f.key, err)); werr != nil || err != nil {
		return
	}
	for {
		req, err := dec.Next()
		if err != nil {
			return
		}
		if req.HasChunk {
			if _, err := c.Write(forwardproto.AppendAck(nil, req.Chunk, false)); err != nil {
				return
			}
		}
	}
}

// TestFluentBitSharedKeyNoUsers (issue 14): Fluent Bit's in_forward sends
// an auth salt in HELO even with no users; the output answers with an
// empty username and hex(sha512(auth)), as Fluent Bit's out_forward does,
// and delivers. It refused before ("the server requires a username and
// password"), so logship -> Fluent Bit with a shared key never delivered.
func TestFluentBitSharedKeyNoUsers(t *testing.T) {
	f := newFakeFluentBit(t, "fb-key")
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{f.ln.Addr().String()}
		c.SharedKey = "fb-key"
	})
	bs := batches(2, 3, 10)
	deliverAll(t, o, bs, 10*time.Second)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pings) == 0 {
		t.Fatal("no PING")
	}
	for i, p := range f.pings {
		sum := sha512.Sum512(f.helos[i].Auth)
		if p.Username != "" || p.PasswordDigest != hex.EncodeToString(sum[:]) || p.Hostname != "sender" {
			t.Fatalf("PING username %q password digest %q hostname %q, want \"\", hex(sha512(auth)), sender", p.Username, p.PasswordDigest, p.Hostname)
		}
	}
}

// TestServerDecidesOnUsers: without a username, a server that does
// require one (our own input with users) is still asked, refuses, and the
// refusal is counted and logged as an auth failure; nothing is stored.
func TestServerDecidesOnUsers(t *testing.T) {
	rec := newRecorder()
	in := receiver(t, "127.0.0.1:0", func(c *fwdin.Config) {
		c.SharedKey = "k"
		c.Users = []fwdin.User{{Username: "agent", Password: "pw"}}
	}, rec)
	addr := in.Addr().String()
	o := newOutput(t, t.TempDir(), nil, func(c *Config) { c.Servers = []string{addr}; c.SharedKey = "k" })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := drive(ctx, o, []pipeline.Batch{batch(0, 1, 3)})
	testutil.CheckFor(t, 5*time.Second, func() error {
		if testutil.Value(o.m.failures.WithLabelValues("fwd", addr, "auth")) < 1 {
			return errors.New("no refused handshake yet")
		}
		return nil
	})
	expectNoResult(t, res, 20*time.Millisecond)
	if rec.count() != 0 {
		t.Fatal("stored without a user")
	}
}

// TestRealFluentBitSharedKey: the output -> a real Fluent Bit in_forward
// with shared_key and no users; every event arrives (Fluent Bit acks the
// chunks once they are in its buffer).
func TestRealFluentBitSharedKey(t *testing.T) {
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(dir, "out.log")
	testutil.StartFluentBit(t, fmt.Sprintf(`service:
  flush: 0.1
  log_level: info
pipeline:
  inputs:
    - name: forward
      listen: %s
      port: %s
      shared_key: fb-key
      self_hostname: fluent-bit
  outputs:
    - name: file
      match: "*"
      path: %s
      file: out.log
      format: plain
`, host, port, dir))
	testutil.CheckFor(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
	o := newOutput(t, t.TempDir(), nil, func(c *Config) {
		c.Servers = []string{addr}
		c.SharedKey = "fb-key"
	})
	bs := batches(2, 5, 20)
	for i := range bs {
		bs[i].Epoch = 1<<32 | 1 // 32-character chunk ids
	}
	deliverAll(t, o, bs, 20*time.Second)
	want := len(bs) * 20
	testutil.CheckFor(t, 10*time.Second, func() error {
		b, _ := os.ReadFile(out)
		if n := bytes.Count(b, []byte(`"seq"`)); n != want {
			return fmt.Errorf("fluent-bit wrote %d of %d events", n, want)
		}
		return nil
	})
}
