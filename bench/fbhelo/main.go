// Command fbhelo captures the HELO a Fluent Bit in_forward sends when it
// has a shared_key, for plugins/output/forward/testdata: it starts
// fluent-bit (from PATH, $FLUENT_BIT or -fluent-bit) on a free port of
// 127.0.0.1 with `shared_key` and no users, connects, writes the raw bytes
// of the first msgpack value the server sends to -out, prints them, and
// then completes the handshake as Fluent Bit's own out_forward does (an
// empty username and hex(sha512(auth + "" + "")) as the password digest)
// to show whether the server accepts that.
//
//	go run ./bench/fbhelo -out plugins/output/forward/testdata/fluentbit-5.1.1-helo.bin
package main

import (
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/logship/logship/bench/internal/benchkit"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/plugins/forwardproto"
)

var (
	fluentBit = flag.String("fluent-bit", "", `fluent-bit binary; "" = $FLUENT_BIT or fluent-bit on PATH`)
	out       = flag.String("out", "", "file to write the HELO's bytes to (optional)")
	sharedKey = flag.String("shared-key", "secret", "in_forward's shared_key")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fbhelo:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := benchkit.FluentBitPath(*fluentBit)
	if bin == "" {
		return errors.New("no fluent-bit: not on PATH, $FLUENT_BIT unset and no -fluent-bit")
	}
	if v, err := exec.Command(bin, "--version").Output(); err == nil {
		fmt.Printf("version: %s\n", strings.SplitN(strings.TrimSpace(string(v)), "\n", 2)[0])
	}
	dir, err := os.MkdirTemp("", "fbhelo")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	cfg := fmt.Sprintf(`service:
  flush: 1
  log_level: info
pipeline:
  inputs:
    - name: forward
      listen: %s
      port: %s
      shared_key: %s
  outputs:
    - name: null
      match: "*"
`, host, port, *sharedKey)
	path := filepath.Join(dir, "fluent-bit.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	fmt.Printf("config (%s):\n%s", path, cfg)
	cmd := exec.Command(bin, "-c", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := benchkit.WaitListening(addr, 30*time.Second); err != nil {
		return err
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	helo, err := readValue(c)
	if err != nil {
		return fmt.Errorf("reading the HELO: %w", err)
	}
	fmt.Printf("HELO, %d bytes:\n%s", len(helo), hex.Dump(helo))
	if *out != "" {
		if err := os.WriteFile(*out, helo, 0o644); err != nil {
			return err
		}
		fmt.Printf("wrote %s\n", *out)
	}
	h, err := forwardproto.NewDecoder(strings.NewReader(string(helo)), forwardproto.Limits{}).NextHelo()
	if err != nil {
		return fmt.Errorf("forwardproto cannot parse it: %w", err)
	}
	fmt.Printf("forwardproto: nonce %d bytes, auth %d bytes, keepalive %v\n", len(h.Nonce), len(h.Auth), h.Keepalive)

	// PING as Fluent Bit's out_forward sends it without users.
	salt := forwardproto.NewSalt()
	hostname := "fbhelo-client"
	ping := mpack.AppendArrayHeader(nil, 6)
	ping = mpack.AppendString(ping, "PING")
	ping = mpack.AppendString(ping, hostname)
	ping = mpack.AppendStringBytes(ping, salt)
	ping = mpack.AppendString(ping, sha512hex(salt, []byte(hostname), h.Nonce, []byte(*sharedKey)))
	ping = mpack.AppendString(ping, "")
	ping = mpack.AppendString(ping, sha512hex(h.Auth, nil, nil))
	if _, err := c.Write(ping); err != nil {
		return err
	}
	pong, err := readValue(c)
	if err != nil {
		return fmt.Errorf("reading the PONG: %w", err)
	}
	fmt.Printf("PONG to an empty username and hex(sha512(auth)), %d bytes:\n%s", len(pong), hex.Dump(pong))
	p, err := forwardproto.NewDecoder(strings.NewReader(string(pong)), forwardproto.Limits{}).NextPong()
	if err != nil {
		return fmt.Errorf("forwardproto cannot parse the PONG: %w", err)
	}
	fmt.Printf("PONG ok=%v reason=%q hostname=%q, digest matches: %v\n", p.OK, p.Reason, p.Hostname,
		p.SharedKeyDigest == sha512hex(salt, []byte(p.Hostname), h.Nonce, []byte(*sharedKey)))
	return nil
}

// readValue reads exactly one msgpack value from c.
func readValue(c net.Conn) ([]byte, error) {
	var b []byte
	tmp := make([]byte, 4096)
	for {
		if len(b) > 0 {
			n, err := mpack.SkipValue(b)
			if err == nil {
				if n != len(b) {
					return nil, fmt.Errorf("%d bytes after the first value", len(b)-n)
				}
				return b, nil
			}
			if !errors.Is(err, mpack.ErrShortBuffer) {
				return nil, err
			}
		}
		n, err := c.Read(tmp)
		b = append(b, tmp[:n]...)
		if err != nil {
			return nil, err
		}
	}
}

func sha512hex(parts ...[]byte) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}
