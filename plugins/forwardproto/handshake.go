package forwardproto

import (
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/logship/logship/internal/mpack"
)

// Helo is the server's greeting when a shared key is configured:
// ["HELO", {"nonce": Nonce, "auth": Auth, "keepalive": Keepalive}].
type Helo struct {
	// Nonce is 16 random bytes, fresh per connection.
	Nonce []byte
	// Auth is the salt for username/password digests, empty when the
	// server does not ask for a username and password.
	Auth []byte
	// Keepalive tells the client it may send more than one request.
	Keepalive bool
}

// NewHelo returns a greeting with a fresh random nonce and, when userAuth,
// a fresh random auth salt, and keepalive true.
func NewHelo(userAuth bool) Helo {
	h := Helo{Nonce: make([]byte, 16), Keepalive: true}
	_, _ = rand.Read(h.Nonce) // never fails
	if userAuth {
		h.Auth = make([]byte, 16)
		_, _ = rand.Read(h.Auth)
	}
	return h
}

// AppendHelo appends the HELO message: nonce as a bin, auth as a bin or, when
// empty, the empty str, as fluentd sends them.
func AppendHelo(dst []byte, h Helo) []byte {
	dst = mpack.AppendArrayHeader(dst, 2)
	dst = mpack.AppendString(dst, "HELO")
	dst = mpack.AppendMapHeader(dst, 3)
	dst = mpack.AppendBin(mpack.AppendString(dst, "nonce"), h.Nonce)
	dst = mpack.AppendString(dst, "auth")
	if len(h.Auth) == 0 {
		dst = mpack.AppendString(dst, "")
	} else {
		dst = mpack.AppendBin(dst, h.Auth)
	}
	return mpack.AppendBool(mpack.AppendString(dst, "keepalive"), h.Keepalive)
}

// NextHelo reads the server's HELO (client side). Nonce and auth may be bin
// or str; keepalive defaults to true; unknown keys are ignored.
func (d *Decoder) NextHelo() (Helo, error) {
	f, _, err := d.nextFrame(d.lim.MaxHandshakeBytes)
	if err != nil {
		return Helo{}, err
	}
	h, err := parseHelo(f)
	if err != nil {
		return Helo{}, d.fail(err)
	}
	return h, nil
}

func parseHelo(f []byte) (Helo, error) {
	h := Helo{Keepalive: true}
	bad := func(what string) (Helo, error) {
		return Helo{}, fmt.Errorf("%w: HELO: %s", ErrMalformed, what)
	}
	n, p, err := mpack.ReadArrayHeader(f)
	if err != nil || n != 2 {
		return bad("not an array of 2")
	}
	s, k, err := mpack.ReadString(f[p:])
	if err != nil || string(s) != "HELO" {
		return bad("no HELO")
	}
	p += k
	m, k, err := mpack.ReadMapHeader(f[p:])
	if err != nil {
		return bad("options are not a map")
	}
	p += k
	hasNonce := false
	for range m {
		key, k, err := mpack.ReadString(f[p:])
		if err != nil {
			key = nil
			k, _ = mpack.SkipValue(f[p:])
		}
		p += k
		vn, _ := mpack.SkipValue(f[p:])
		v := f[p : p+vn]
		p += vn
		switch string(key) {
		case "nonce":
			b, _, err := mpack.ReadString(v)
			if err != nil {
				return bad("nonce is not bytes")
			}
			h.Nonce, hasNonce = append([]byte(nil), b...), true
		case "auth":
			if v[0] == 0xc0 {
				continue
			}
			b, _, err := mpack.ReadString(v)
			if err != nil {
				return bad("auth is not bytes")
			}
			h.Auth = append([]byte(nil), b...)
		case "keepalive":
			switch v[0] {
			case 0xc2:
				h.Keepalive = false
			case 0xc3:
				h.Keepalive = true
			}
		}
	}
	if !hasNonce {
		return bad("no nonce")
	}
	return h, nil
}

// Ping is the client's answer to HELO: ["PING", Hostname, SharedKeySalt,
// SharedKeyDigest, Username, PasswordDigest].
type Ping struct {
	Hostname        string
	SharedKeySalt   []byte
	SharedKeyDigest string // hex(sha512(salt + hostname + nonce + shared key))
	Username        string
	PasswordDigest  string // hex(sha512(auth salt + username + password)), or ""
}

// NextPing reads the client's PING (server side). Anything but an array of
// exactly six, "PING" and five strings (str or bin) fails with ErrMalformed;
// answer it with AppendPong(..., err) before closing. JSON is refused: it is
// not allowed with authentication.
func (d *Decoder) NextPing() (Ping, error) {
	f, _, err := d.nextFrame(d.lim.MaxHandshakeBytes)
	if err != nil {
		return Ping{}, err
	}
	if d.format == formatJSON {
		return Ping{}, d.fail(fmt.Errorf("%w: JSON is not allowed with authentication", ErrMalformed))
	}
	var el [6][]byte
	if err := readStrings(f, "PING", el[:]); err != nil {
		return Ping{}, d.fail(err)
	}
	return Ping{
		Hostname:        string(el[1]),
		SharedKeySalt:   append([]byte(nil), el[2]...),
		SharedKeyDigest: string(el[3]),
		Username:        string(el[4]),
		PasswordDigest:  string(el[5]),
	}, nil
}

// readStrings reads an array of exactly len(el) strings whose first is kind.
func readStrings(f []byte, kind string, el [][]byte) error {
	n, p, err := mpack.ReadArrayHeader(f)
	if err != nil || n != len(el) {
		return fmt.Errorf("%w: %s: not an array of %d", ErrMalformed, kind, len(el))
	}
	for i := range el {
		s, k, err := mpack.ReadString(f[p:])
		if err != nil {
			return fmt.Errorf("%w: %s: element %d is not a string", ErrMalformed, kind, i)
		}
		el[i] = s
		p += k
	}
	if string(el[0]) != kind {
		return fmt.Errorf("%w: want %s, got %q", ErrMalformed, kind, el[0])
	}
	return nil
}

// digest is lowercase hex(sha512(parts...)).
func digest(parts ...[]byte) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sharedKeyDigest(salt []byte, hostname string, nonce []byte, sharedKey string) string {
	return digest(salt, []byte(hostname), nonce, []byte(sharedKey))
}

func passwordDigest(authSalt []byte, username, password string) string {
	return digest(authSalt, []byte(username), []byte(password))
}

func equalDigest(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// VerifyPing checks a PING against the HELO this server sent: the shared-key
// digest, and, when h.Auth is set, the username and password digest against
// users (username to password). Digests must be lowercase hex. It returns nil
// or an *AuthError (errors.Is ErrAuth) with fluentd's reason.
func VerifyPing(p Ping, h Helo, sharedKey string, users map[string]string) error {
	if !equalDigest(p.SharedKeyDigest, sharedKeyDigest(p.SharedKeySalt, p.Hostname, h.Nonce, sharedKey)) {
		return &AuthError{Reason: "shared_key mismatch"}
	}
	if len(h.Auth) > 0 {
		pw, ok := users[p.Username]
		if !ok || !equalDigest(p.PasswordDigest, passwordDigest(h.Auth, p.Username, pw)) {
			return &AuthError{Reason: "username/password mismatch"}
		}
	}
	return nil
}

// AppendPong appends the server's answer to a PING. With err nil (the PING
// verified) it is ["PONG", true, "", hostname, hex(sha512(ping salt +
// hostname + nonce + shared key))]; otherwise ["PONG", false, reason, "", ""]
// with the *AuthError's reason or "invalid ping message", after which the
// server closes the connection.
func AppendPong(dst []byte, h Helo, p Ping, hostname, sharedKey string, err error) []byte {
	dst = mpack.AppendArrayHeader(dst, 5)
	dst = mpack.AppendString(dst, "PONG")
	if err == nil {
		dst = mpack.AppendBool(dst, true)
		dst = mpack.AppendString(dst, "")
		dst = mpack.AppendString(dst, hostname)
		return mpack.AppendString(dst, sharedKeyDigest(p.SharedKeySalt, hostname, h.Nonce, sharedKey))
	}
	reason := "invalid ping message"
	if ae := (*AuthError)(nil); errors.As(err, &ae) {
		reason = ae.Reason
	}
	dst = mpack.AppendBool(dst, false)
	dst = mpack.AppendString(dst, reason)
	return mpack.AppendString(mpack.AppendString(dst, ""), "")
}

// ClientAuth is the client side's credentials.
type ClientAuth struct {
	// Hostname is this client's name (fluentd's self_hostname); it must
	// differ from the server's.
	Hostname string
	// SharedKey is the key both sides know.
	SharedKey string
	// Username and Password are sent when the server's HELO asks for them.
	Username, Password string
}

// NewSalt returns a fresh shared-key salt for one connection's PING: 16
// random bytes as 32 lowercase hex characters (text, so peers that decode
// str as UTF-8 see the same bytes).
func NewSalt() []byte {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.AppendEncode(nil, b[:])
}

// AppendPing appends the client's PING for the server's HELO h:
// ["PING", hostname, salt, hex(sha512(salt + hostname + nonce + shared
// key)), username, password digest]. When the HELO carries an auth salt the
// last two are the configured username and hex(sha512(auth + username +
// password)), with empty strings when no user is configured: Fluent Bit's
// in_forward sends an auth salt even when it has no users, its out_forward
// answers exactly so, and only the server knows whether it requires a user
// (one that does answers PONG false). Without an auth salt both are "".
func AppendPing(dst []byte, h Helo, a ClientAuth, salt []byte) ([]byte, error) {
	user, pw := "", ""
	if len(h.Auth) > 0 {
		user, pw = a.Username, passwordDigest(h.Auth, a.Username, a.Password)
	}
	dst = mpack.AppendArrayHeader(dst, 6)
	dst = mpack.AppendString(dst, "PING")
	dst = mpack.AppendString(dst, a.Hostname)
	dst = mpack.AppendStringBytes(dst, salt)
	dst = mpack.AppendString(dst, sharedKeyDigest(salt, a.Hostname, h.Nonce, a.SharedKey))
	dst = mpack.AppendString(dst, user)
	return mpack.AppendString(dst, pw), nil
}

// Pong is the server's answer to PING: ["PONG", OK, Reason, Hostname,
// SharedKeyDigest].
type Pong struct {
	OK              bool
	Reason          string
	Hostname        string
	SharedKeyDigest string
}

// NextPong reads the server's PONG (client side): an array of exactly five.
func (d *Decoder) NextPong() (Pong, error) {
	f, _, err := d.nextFrame(d.lim.MaxHandshakeBytes)
	if err != nil {
		return Pong{}, err
	}
	bad := func(what string) (Pong, error) {
		return Pong{}, d.fail(fmt.Errorf("%w: PONG: %s", ErrMalformed, what))
	}
	n, p, err := mpack.ReadArrayHeader(f)
	if err != nil || n != 5 {
		return bad("not an array of 5")
	}
	var el [5][]byte
	var ok bool
	for i := range el {
		if i == 1 {
			switch f[p] {
			case 0xc2, 0xc3:
				ok = f[p] == 0xc3
				p++
				continue
			}
			return bad("element 1 is not a bool")
		}
		s, k, err := mpack.ReadString(f[p:])
		if err != nil {
			return bad(fmt.Sprintf("element %d is not a string", i))
		}
		el[i] = s
		p += k
	}
	if string(el[0]) != "PONG" {
		return bad("no PONG")
	}
	return Pong{OK: ok, Reason: string(el[2]), Hostname: string(el[3]), SharedKeyDigest: string(el[4])}, nil
}

// VerifyPong checks the server's PONG as fluentd's client does: the server
// accepted, its hostname is not ours, its digest proves it knows the shared
// key. It returns nil or an *AuthError.
func VerifyPong(p Pong, h Helo, a ClientAuth, salt []byte) error {
	switch {
	case !p.OK:
		return &AuthError{Reason: p.Reason}
	case p.Hostname == a.Hostname:
		return &AuthError{Reason: "same hostname between input and output: invalid configuration"}
	case !equalDigest(p.SharedKeyDigest, sharedKeyDigest(salt, p.Hostname, h.Nonce, a.SharedKey)):
		return &AuthError{Reason: "shared key mismatch"}
	}
	return nil
}

// UDPHeartbeatReply answers a datagram received on the forward port's UDP
// socket. A heartbeat (the single byte 0x00, what fluentd's out_forward
// sends) is answered with 0x00; anything else gets no answer (ok false).
func UDPHeartbeatReply(datagram []byte) (reply []byte, ok bool) {
	if len(datagram) == 1 && datagram[0] == 0x00 {
		return []byte{0x00}, true
	}
	return nil, false
}
