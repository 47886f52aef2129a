package forwardproto

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Golden handshake inputs. The expected digests were computed outside Go
// with sha512sum, and again below with crypto/sha512 by PROTOCOL.md's
// formula.
var (
	goldenNonce    = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	goldenSalt     = []byte("secret-salt-0123")
	goldenAuthSalt = []byte("auth-salt-987654")
	goldenClient   = ClientAuth{Hostname: "client.example", SharedKey: "sharedkey", Username: "alice", Password: "passw0rd"}
	goldenServer   = "server.example"
	goldenUsers    = map[string]string{"alice": "passw0rd", "bob": "other"}

	goldenPingDigest     = "554eca5bbb1a39462f50ca06ba77beb06fcadaaae7e34e817c743563f3a02050b6fb793c1ac082496d3696f926eb8bf63645312597f6d74b7b8964dcf43542df"
	goldenPongDigest     = "c42fbd47b05776771b64494384b4d0fff1c43fecb22573f778cc667e9bf6b0e1fcbb33ab3fe201300b663f0ae5dbd77533fa4d166a3fbb857fdb61ae5a6a4ebe"
	goldenPasswordDigest = "4f3c4288754bff6d3d43d8032bf261eec9a889706830ca840766f644545c5ab2110a01347b6f7b6bab9e3f822787939b11aedaa0e3b81280de270084b14520da"
)

func sha512Hex(parts ...string) string {
	h := sha512.Sum512([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(h[:])
}

func TestGoldenDigestsByFormula(t *testing.T) {
	n := string(goldenNonce)
	if got := sha512Hex(string(goldenSalt), goldenClient.Hostname, n, goldenClient.SharedKey); got != goldenPingDigest {
		t.Fatal("ping digest formula")
	}
	if got := sha512Hex(string(goldenSalt), goldenServer, n, goldenClient.SharedKey); got != goldenPongDigest {
		t.Fatal("pong digest formula")
	}
	if got := sha512Hex(string(goldenAuthSalt), "alice", "passw0rd"); got != goldenPasswordDigest {
		t.Fatal("password digest formula")
	}
}

func goldenHelo() Helo { return Helo{Nonce: goldenNonce, Auth: goldenAuthSalt, Keepalive: true} }

func TestHandshakeGolden(t *testing.T) {
	h := goldenHelo()
	// HELO as fluentd sends it.
	var helo []any
	if err := msgpack.Unmarshal(AppendHelo(nil, h), &helo); err != nil {
		t.Fatal(err)
	}
	opts := helo[1].(map[string]any)
	if helo[0] != "HELO" || !bytes.Equal(opts["nonce"].([]byte), goldenNonce) || !bytes.Equal(opts["auth"].([]byte), goldenAuthSalt) || opts["keepalive"] != true {
		t.Fatalf("HELO %v", helo)
	}
	// PING.
	ping, err := AppendPing(nil, h, goldenClient, goldenSalt)
	if err != nil {
		t.Fatal(err)
	}
	var pingv []string
	if err := msgpack.Unmarshal(ping, &pingv); err != nil {
		t.Fatal(err)
	}
	want := []string{"PING", "client.example", string(goldenSalt), goldenPingDigest, "alice", goldenPasswordDigest}
	if strings.Join(pingv, "|") != strings.Join(want, "|") {
		t.Fatalf("PING\n got %q\nwant %q", pingv, want)
	}
	// Server side.
	p, err := newTestDecoder(bytes.NewReader(ping), Limits{}).NextPing()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPing(p, h, "sharedkey", goldenUsers); err != nil {
		t.Fatal(err)
	}
	pong := AppendPong(nil, h, p, goldenServer, "sharedkey", nil)
	var pongv []any
	if err := msgpack.Unmarshal(pong, &pongv); err != nil {
		t.Fatal(err)
	}
	if len(pongv) != 5 || pongv[0] != "PONG" || pongv[1] != true || pongv[2] != "" || pongv[3] != goldenServer || pongv[4] != goldenPongDigest {
		t.Fatalf("PONG %v", pongv)
	}
	// Client side.
	pg, err := newTestDecoder(bytes.NewReader(pong), Limits{}).NextPong()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPong(pg, h, goldenClient, goldenSalt); err != nil {
		t.Fatal(err)
	}
}

// TestHeloBinOrStr: nonce and auth may come as bin or str; missing keepalive
// means true; unknown keys are ignored; auth "" means no user auth.
func TestHeloBinOrStr(t *testing.T) {
	for _, b := range [][]byte{
		marshal(t, []any{"HELO", map[string]any{"nonce": goldenNonce, "auth": goldenAuthSalt, "keepalive": true}}),
		marshal(t, []any{"HELO", map[string]any{"nonce": string(goldenNonce), "auth": string(goldenAuthSalt), "x": 1}}),
	} {
		h, err := newTestDecoder(bytes.NewReader(b), Limits{}).NextHelo()
		if err != nil || !bytes.Equal(h.Nonce, goldenNonce) || !bytes.Equal(h.Auth, goldenAuthSalt) || !h.Keepalive {
			t.Fatalf("%+v %v", h, err)
		}
	}
	h, err := newTestDecoder(bytes.NewReader(marshal(t, []any{"HELO", map[string]any{"nonce": "n", "auth": "", "keepalive": false}})), Limits{}).NextHelo()
	if err != nil || len(h.Auth) != 0 || h.Keepalive {
		t.Fatalf("%+v %v", h, err)
	}
	// Without user auth the PING carries empty username and digest.
	ping, _ := AppendPing(nil, h, goldenClient, goldenSalt)
	var v []string
	_ = msgpack.Unmarshal(ping, &v)
	if len(v) != 6 || v[4] != "" || v[5] != "" {
		t.Fatalf("PING %q", v)
	}
	for _, b := range [][]byte{
		marshal(t, []any{"HELO"}),
		marshal(t, []any{"HELO", map[string]any{}}),
		marshal(t, []any{"HELO", map[string]any{"nonce": 5}}),
		marshal(t, []any{"PONG", map[string]any{"nonce": "n"}}),
		marshal(t, []any{"HELO", "x"}),
	} {
		_, err := newTestDecoder(bytes.NewReader(b), Limits{}).NextHelo()
		wantErr(t, err, ErrMalformed)
	}
}

func TestNewHeloRandom(t *testing.T) {
	a, b := NewHelo(true), NewHelo(false)
	if len(a.Nonce) != 16 || len(a.Auth) != 16 || len(b.Auth) != 0 || bytes.Equal(a.Nonce, b.Nonce) || !a.Keepalive {
		t.Fatalf("%+v %+v", a, b)
	}
	if s := NewSalt(); len(s) != 32 || bytes.Equal(s, NewSalt()) {
		t.Fatalf("salt %q", s)
	}
}

func authReason(t *testing.T, err error) string {
	t.Helper()
	var ae *AuthError
	if !errors.Is(err, ErrAuth) || !errors.As(err, &ae) {
		t.Fatalf("error %v, want an AuthError", err)
	}
	return ae.Reason
}

// TestWrongCredentialsRefused: the server refuses a wrong key, a wrong or
// unknown user, an uppercase digest; the PONG says why; the client reports it.
func TestWrongCredentialsRefused(t *testing.T) {
	h := goldenHelo()
	cases := []struct {
		name   string
		auth   ClientAuth
		edit   func(p *Ping)
		reason string
	}{
		{"wrong key", ClientAuth{Hostname: "c", SharedKey: "nope", Username: "alice", Password: "passw0rd"}, nil, "shared_key mismatch"},
		{"wrong password", ClientAuth{Hostname: "c", SharedKey: "sharedkey", Username: "alice", Password: "nope"}, nil, "username/password mismatch"},
		{"unknown user", ClientAuth{Hostname: "c", SharedKey: "sharedkey", Username: "mallory", Password: "x"}, nil, "username/password mismatch"},
		{"uppercase digest", goldenClient, func(p *Ping) { p.SharedKeyDigest = strings.ToUpper(p.SharedKeyDigest) }, "shared_key mismatch"},
		{"other user's password", ClientAuth{Hostname: "c", SharedKey: "sharedkey", Username: "bob", Password: "passw0rd"}, nil, "username/password mismatch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ping, err := AppendPing(nil, h, c.auth, goldenSalt)
			if err != nil {
				t.Fatal(err)
			}
			p, err := newTestDecoder(bytes.NewReader(ping), Limits{}).NextPing()
			if err != nil {
				t.Fatal(err)
			}
			if c.edit != nil {
				c.edit(&p)
			}
			verr := VerifyPing(p, h, "sharedkey", goldenUsers)
			if got := authReason(t, verr); got != c.reason {
				t.Fatalf("reason %q, want %q", got, c.reason)
			}
			pong := AppendPong(nil, h, p, goldenServer, "sharedkey", verr)
			var v []any
			if err := msgpack.Unmarshal(pong, &v); err != nil {
				t.Fatal(err)
			}
			if len(v) != 5 || v[0] != "PONG" || v[1] != false || v[2] != c.reason || v[3] != "" || v[4] != "" {
				t.Fatalf("PONG %v", v)
			}
			pg, err := newTestDecoder(bytes.NewReader(pong), Limits{}).NextPong()
			if err != nil {
				t.Fatal(err)
			}
			if got := authReason(t, VerifyPong(pg, h, c.auth, goldenSalt)); got != c.reason {
				t.Fatalf("client reason %q", got)
			}
		})
	}
	// Without a configured user the client answers an auth salt with an
	// empty username and hex(sha512(auth)) and lets the server decide, as
	// Fluent Bit's out_forward does.
	ping, err := AppendPing(nil, h, ClientAuth{Hostname: "c", SharedKey: "k"}, goldenSalt)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := msgpack.Unmarshal(ping, &got); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(h.Auth)
	if len(got) != 6 || got[4] != "" || got[5] != hex.EncodeToString(sum[:]) {
		t.Fatalf("PING %q: want an empty username and hex(sha512(auth))", got)
	}
}

// TestPingShape: exactly six strings starting with PING, else malformed,
// answered with "invalid ping message"; JSON is not allowed.
func TestPingShape(t *testing.T) {
	for name, b := range map[string][]byte{
		"five":         marshal(t, []any{"PING", "h", "s", "d", ""}),
		"seven":        marshal(t, []any{"PING", "h", "s", "d", "", "", ""}),
		"not PING":     marshal(t, []any{"PONG", "h", "s", "d", "", ""}),
		"int":          marshal(t, []any{"PING", "h", "s", 5, "", ""}),
		"a request":    marshal(t, []any{"tag", 1, map[string]any{}}),
		"JSON":         []byte(`["PING","h","s","d","",""]`),
		"not an array": marshal(t, "PING"),
	} {
		_, err := newTestDecoder(bytes.NewReader(b), Limits{}).NextPing()
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: %v", name, err)
		}
		var v []any
		_ = msgpack.Unmarshal(AppendPong(nil, goldenHelo(), Ping{}, "s", "k", err), &v)
		if v[1] != false || v[2] != "invalid ping message" {
			t.Fatalf("%s: PONG %v", name, v)
		}
	}
	// bin elements are accepted.
	b := marshal(t, []any{"PING", []byte("h"), goldenSalt, "d", []byte(""), ""})
	p, err := newTestDecoder(bytes.NewReader(b), Limits{}).NextPing()
	if err != nil || p.Hostname != "h" || !bytes.Equal(p.SharedKeySalt, goldenSalt) {
		t.Fatalf("%+v %v", p, err)
	}
}

// TestPongChecks: the client rejects a PONG with its own hostname or a wrong
// digest, and a PONG of the wrong shape.
func TestPongChecks(t *testing.T) {
	h := goldenHelo()
	own := marshal(t, []any{"PONG", true, "", goldenClient.Hostname, sha512Hex(string(goldenSalt), goldenClient.Hostname, string(goldenNonce), "sharedkey")})
	pg, err := newTestDecoder(bytes.NewReader(own), Limits{}).NextPong()
	if err != nil {
		t.Fatal(err)
	}
	if r := authReason(t, VerifyPong(pg, h, goldenClient, goldenSalt)); !strings.Contains(r, "same hostname") {
		t.Fatal(r)
	}
	bad := marshal(t, []any{"PONG", true, "", goldenServer, sha512Hex(string(goldenSalt), goldenServer, string(goldenNonce), "otherkey")})
	pg, _ = newTestDecoder(bytes.NewReader(bad), Limits{}).NextPong()
	if r := authReason(t, VerifyPong(pg, h, goldenClient, goldenSalt)); r != "shared key mismatch" {
		t.Fatal(r)
	}
	for _, b := range [][]byte{
		marshal(t, []any{"PONG", true, "", goldenServer}),
		marshal(t, []any{"PONG", "yes", "", goldenServer, ""}),
		marshal(t, []any{"PING", true, "", goldenServer, ""}),
		marshal(t, map[string]any{"ack": "x"}),
	} {
		_, err := newTestDecoder(bytes.NewReader(b), Limits{}).NextPong()
		wantErr(t, err, ErrMalformed)
	}
}

// TestHandshakeOverConn runs both sides over a net.Pipe, then a request and
// its ack.
func TestHandshakeOverConn(t *testing.T) {
	cc, sc := net.Pipe()
	defer cc.Close()
	done := make(chan error, 1)
	go func() {
		defer sc.Close()
		dec := NewDecoder(sc, Limits{})
		h := NewHelo(true)
		if _, err := sc.Write(AppendHelo(nil, h)); err != nil {
			done <- err
			return
		}
		p, err := dec.NextPing()
		if err == nil {
			err = VerifyPing(p, h, "k", map[string]string{"u": "pw"})
		}
		if _, werr := sc.Write(AppendPong(nil, h, p, "server", "k", err)); err != nil || werr != nil {
			done <- errors.Join(err, werr)
			return
		}
		req, err := dec.Next()
		if err != nil {
			done <- err
			return
		}
		_, err = sc.Write(AppendAck(nil, req.Chunk, req.JSON))
		done <- err
	}()
	auth := ClientAuth{Hostname: "client", SharedKey: "k", Username: "u", Password: "pw"}
	dec := NewDecoder(cc, Limits{})
	h, err := dec.NextHelo()
	if err != nil {
		t.Fatal(err)
	}
	salt := NewSalt()
	ping, err := AppendPing(nil, h, auth, salt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Write(ping); err != nil {
		t.Fatal(err)
	}
	pong, err := dec.NextPong()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPong(pong, h, auth, salt); err != nil {
		t.Fatal(err)
	}
	id := ChunkID([6]byte{1, 2, 3, 4, 5, 6}, 3, 99)
	req, err := NewEncoder().AppendPackedForward(nil, "t", rawEntry(t, marshal(t, 1), testRecords(t)[0]), 1, id, CompressGzip)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Write(req); err != nil {
		t.Fatal(err)
	}
	ack, err := dec.NextAck()
	if err != nil || ack != id {
		t.Fatalf("ack %q %v", ack, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestUDPHeartbeat: a 0x00 datagram is answered with 0x00, nothing else is.
func TestUDPHeartbeat(t *testing.T) {
	if r, ok := UDPHeartbeatReply([]byte{0}); !ok || !bytes.Equal(r, []byte{0}) {
		t.Fatal(r, ok)
	}
	for _, d := range [][]byte{nil, {1}, {0, 0}, []byte("GET")} {
		if _, ok := UDPHeartbeatReply(d); ok {
			t.Fatalf("%q answered", d)
		}
	}
}

// TestPongReasonWrapped: a wrapped AuthError still gives its reason.
func TestPongReasonWrapped(t *testing.T) {
	var v []any
	err := fmt.Errorf("ctx: %w", &AuthError{Reason: "shared_key mismatch"})
	_ = msgpack.Unmarshal(AppendPong(nil, goldenHelo(), Ping{}, "s", "k", err), &v)
	if v[2] != "shared_key mismatch" {
		t.Fatal(v)
	}
}
