package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/logship/logship/plugins/forwardproto"
)

// opError is a failure of a server, with the reason it is counted under.
type opError struct {
	reason string // connect, tls, auth, handshake, write, read, ack_timeout
	err    error
}

func (e *opError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

func reasonOf(err error) string {
	if oe, ok := errors.AsType[*opError](err); ok {
		return oe.reason
	}
	return "connection"
}

// ackFrameLimit bounds what a server may send us in one frame (acks, HELO,
// PONG are tiny).
const ackFrameLimit = 64 << 10

// server is one receiver: its health, its backoff and its connection.
//
// A healthy server (no failure since its last delivery) is dialed lazily
// by the first chunk that needs it. A failure marks it down; from then on
// a probe goroutine redials it after each backoff, and chunks avoid it
// until the probe has a connection again.
type server struct {
	o        *Output
	addr     string // ip:port (or host:port when it could not be resolved)
	hash     uint64 // of addr, for rendezvous hashing
	tlsConf  *tls.Config
	connects prometheus.Counter
	up       prometheus.Gauge

	mu      sync.Mutex
	cur     *conn              // the connection new chunks use, nil if none
	conns   map[*conn]struct{} // every open connection (cur and one-shot ones)
	dialing chan struct{}      // closed when the lazy dial under way ends
	probing bool               // the probe goroutine runs
	fails   int                // failures since the last delivery
	down    time.Time          // the probe's next attempt, not before
	lastErr error
	lastLog time.Time
	stopped bool
	removed bool // its name no longer resolves to it: draining
}

// newServer makes the server at addr; host is the name TLS verifies.
func newServer(o *Output, addr, host string) *server {
	s := &server{o: o, addr: addr, hash: addrHash(addr), conns: map[*conn]struct{}{},
		connects: o.m.connects.WithLabelValues(o.set.Name, addr),
		up:       o.m.up.WithLabelValues(o.set.Name, addr),
	}
	s.up.Set(1) // healthy until proven otherwise
	if o.tlsConf != nil {
		s.tlsConf = o.tlsConf
		if s.tlsConf.ServerName == "" {
			s.tlsConf = o.tlsConf.Clone()
			s.tlsConf.ServerName = host
		}
	}
	return s
}

// usable reports whether chunks may be sent to the server now.
func (s *server) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.stopped && !s.removed && (s.cur != nil || s.fails == 0)
}

// remove marks the server as no longer resolved: no new chunk goes to it.
func (s *server) remove() {
	s.mu.Lock()
	s.removed = true
	s.mu.Unlock()
}

// revive takes a removed server back, unless it was closed already.
func (s *server) revive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.removed = false
	return true
}

func (s *server) removing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed && !s.stopped
}

// busy says whether a chunk waits for its ack on one of its connections.
func (s *server) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.waiting() > 0 {
			return true
		}
	}
	return false
}

// backoff is the wait after n failures in a row: retry_min doubled n-1
// times, at most retry_max, with jitter over its upper half.
func (s *server) backoff(n int) time.Duration {
	lo, hi := s.o.cfg.RetryMin.D(), s.o.cfg.RetryMax.D()
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// failLocked records a failure: the server is down for its backoff.
func (s *server) failLocked(err error) {
	s.fails++
	now := time.Now()
	wait := s.backoff(s.fails)
	s.down = now.Add(wait)
	s.lastErr = err
	s.up.Set(0)
	reason := reasonOf(err)
	s.o.m.failure(s.addr, reason)
	if s.fails > 1 && now.Sub(s.lastLog) < time.Minute {
		return
	}
	s.lastLog = now
	fields := []zap.Field{zap.String("server", s.addr), zap.Int("failures_in_a_row", s.fails), zap.Duration("retry_in", wait), zap.Error(err)}
	if reason == "auth" {
		s.o.log.Error("forward handshake refused by the server: shared_key (or username/password) does not match its configuration; retrying, meanwhile chunks go to other servers or wait", fields...)
		return
	}
	s.o.log.Warn("forward server failed; retrying, meanwhile its chunks go to the next healthy server or wait", fields...)
}

// ok records a delivery: the server is healthy.
func (s *server) ok() {
	s.mu.Lock()
	recovered := s.fails > 0
	if recovered {
		s.o.log.Info("forward server healthy again", zap.String("server", s.addr), zap.Int("failures", s.fails))
		s.fails, s.down, s.lastErr = 0, time.Time{}, nil
	}
	s.mu.Unlock()
	s.up.Set(1)
	if recovered {
		s.o.notify()
	}
}

// lost forgets a closed connection; fault says the server is to blame.
func (s *server) lost(c *conn, err error, fault bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.cur == c {
		s.cur = nil
	}
	if s.stopped {
		return
	}
	if fault {
		s.failLocked(err)
	}
	if s.fails > 0 && s.cur == nil && !s.removed {
		s.probeLocked()
	}
}

// adoptLocked makes c the server's connection and starts reading it.
func (s *server) adoptLocked(c *conn) {
	s.connects.Inc()
	s.up.Set(1)
	s.cur = c
	s.conns[c] = struct{}{}
	s.o.wg.Add(1)
	go c.readLoop()
}

// stop closes every connection, failing what waits on them with err; no
// new one is made.
func (s *server) stop(err error) {
	s.mu.Lock()
	s.stopped = true
	s.cur = nil
	var cs []*conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.close(err, false)
	}
}

// send delivers one frame on the server's connection (dialing it if
// needed); wrote is called once the frame was written, or failed to be.
func (s *server) send(ctx context.Context, chunk string, frame []byte, wrote func()) error {
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	return c.send(ctx, chunk, frame, wrote)
}

// get returns the connection to use, dialing one if the server is healthy
// and has none. Every caller waiting at the same time shares one dial.
func (s *server) get(ctx context.Context) (*conn, error) {
	for {
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			if s.removed {
				return nil, errRemoved
			}
			return nil, ErrStopped
		}
		if s.removed {
			s.mu.Unlock()
			return nil, errRemoved
		}
		if c := s.cur; c != nil {
			if c.oneShot {
				s.cur = nil // the server closes it after one request
			}
			s.mu.Unlock()
			return c, nil
		}
		if s.fails > 0 { // down: the probe brings it back
			err := s.lastErr
			s.mu.Unlock()
			return nil, err
		}
		if s.dialing == nil {
			s.dialing = make(chan struct{})
			s.o.wg.Add(1)
			go s.dial(s.dialing)
		}
		ch := s.dialing
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dial connects a healthy server that has no connection.
func (s *server) dial(ch chan struct{}) {
	defer s.o.wg.Done()
	defer close(ch)
	c, err := s.connect()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = nil
	switch {
	case s.stopped || s.o.ctx.Err() != nil:
		if err == nil {
			_ = c.nc.Close()
		}
	case err != nil:
		s.failLocked(err)
		s.probeLocked()
	default:
		s.adoptLocked(c)
	}
}

// probeLocked starts the probe unless it runs already.
func (s *server) probeLocked() {
	if s.probing || s.stopped {
		return
	}
	s.probing = true
	s.o.wg.Add(1)
	go s.probe()
}

// probe redials a server that is down, after each backoff, until it has a
// connection again or the output stops; then waiting chunks are woken.
func (s *server) probe() {
	defer s.o.wg.Done()
	for {
		s.mu.Lock()
		wait := time.Until(s.down)
		s.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.o.ctx.Done():
				t.Stop()
			}
		}
		var c *conn
		err := s.o.ctx.Err()
		if err == nil {
			c, err = s.connect()
		}
		s.mu.Lock()
		switch {
		case s.stopped || s.o.ctx.Err() != nil:
			s.probing = false
			s.mu.Unlock()
			if err == nil {
				_ = c.nc.Close()
			}
			return
		case err != nil:
			s.failLocked(err)
			s.mu.Unlock()
			continue
		}
		s.probing = false
		s.adoptLocked(c)
		s.mu.Unlock()
		s.o.log.Info("forward server reachable again", zap.String("server", s.addr))
		s.o.notify()
		return
	}
}

// connect dials, and does the TLS and shared-key handshakes, within
// connect_timeout.
func (s *server) connect() (*conn, error) {
	o := s.o
	ctx, cancel := context.WithTimeout(o.ctx, o.cfg.ConnectTimeout.D())
	defer cancel()
	keepalive := o.cfg.TCPKeepalive.D()
	if keepalive == 0 {
		keepalive = -1 // off
	}
	d := net.Dialer{KeepAlive: keepalive}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, &opError{"connect", err}
	}
	if s.tlsConf != nil {
		tc := tls.Client(nc, s.tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, &opError{"tls", err}
		}
		nc = tc
	}
	c := &conn{s: s, nc: nc, dec: forwardproto.NewDecoder(nc, forwardproto.Limits{MaxFrameBytes: ackFrameLimit}),
		wlock: make(chan struct{}, 1), closed: make(chan struct{}), pending: map[string][]waiter{}}
	if o.cfg.SharedKey != "" {
		if err := c.handshake(ctx); err != nil {
			_ = nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// conn is one connection: frames are written whole under wlock, one
// goroutine reads the acks and hands each to the chunk waiting for it.
type conn struct {
	s       *server
	nc      net.Conn
	dec     *forwardproto.Decoder
	oneShot bool // the server's HELO said keepalive false
	wlock   chan struct{}
	closed  chan struct{}
	used    atomic.Bool // a chunk went through: a later idle close is no failure
	acked   atomic.Bool

	mu      sync.Mutex
	pending map[string][]waiter // by chunk id
	err     error               // why it closed
}

// waiter is a chunk waiting for its ack: a deliver goroutine (ch) or a
// chunk sent by WriteAsync's caller itself (f, answered on the goroutine
// that resolves it).
type waiter struct {
	ch chan error
	f  *fastSend
}

func (w waiter) answer(err error) {
	if w.f != nil {
		w.f.finish(err)
		return
	}
	w.ch <- err
}

func (c *conn) handshake(ctx context.Context) error {
	o := c.s.o
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	err := func() error {
		helo, err := c.dec.NextHelo()
		if err != nil {
			var ne net.Error
			if errors.Is(err, forwardproto.ErrMalformed) || (errors.As(err, &ne) && ne.Timeout() && ctx.Err() != context.Canceled) {
				return &opError{"handshake", fmt.Errorf("the server did not greet with HELO (is shared_key set on it?): %w", err)}
			}
			return &opError{"handshake", fmt.Errorf("waiting for HELO: %w", err)}
		}
		c.oneShot = !helo.Keepalive
		auth := forwardproto.ClientAuth{Hostname: o.cfg.SelfHostname, SharedKey: o.cfg.SharedKey, Username: o.cfg.Username, Password: o.cfg.Password}
		salt := forwardproto.NewSalt()
		ping, err := forwardproto.AppendPing(nil, helo, auth, salt)
		if err != nil {
			return &opError{"auth", err}
		}
		if _, err := c.nc.Write(ping); err != nil {
			return &opError{"handshake", fmt.Errorf("sending PING: %w", err)}
		}
		pong, err := c.dec.NextPong()
		if err != nil {
			return &opError{"handshake", fmt.Errorf("waiting for PONG: %w", err)}
		}
		if err := forwardproto.VerifyPong(pong, helo, auth, salt); err != nil {
			return &opError{"auth", err}
		}
		return nil
	}()
	if !stop() && err == nil {
		err = &opError{"handshake", ctx.Err()}
	}
	if err == nil {
		_ = c.nc.SetDeadline(time.Time{})
	}
	return err
}

// waiting is the number of chunks waiting for their ack.
func (c *conn) waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func (c *conn) register(chunk string, w waiter) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.pending[chunk] = append(c.pending[chunk], w)
	return nil
}

// unregister forgets a waiter that gave up (it may have been answered
// already: its channel then holds the answer).
func (c *conn) unregister(chunk string, w waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.pending[chunk]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.pending, chunk)
	} else {
		c.pending[chunk] = ws
	}
}

// resolve answers every waiter of an acknowledged chunk.
func (c *conn) resolve(chunk string) {
	c.mu.Lock()
	ws := c.pending[chunk]
	delete(c.pending, chunk)
	c.mu.Unlock()
	for _, w := range ws {
		w.answer(nil)
	}
}

// close closes the connection once and fails every chunk waiting on it.
func (c *conn) close(err error, fault bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pend := c.pending
	c.pending = nil
	close(c.closed)
	c.mu.Unlock()
	_ = c.nc.Close()
	for _, ws := range pend {
		for _, w := range ws {
			w.answer(err)
		}
	}
	c.s.lost(c, err, fault)
}

func (c *conn) closeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// send writes frame and, when chunk is set, waits for its ack. A write or
// an ack that takes longer than ack_timeout fails the connection.
func (c *conn) send(ctx context.Context, chunk string, frame []byte, wrote func()) error {
	o := c.s.o
	var ch chan error
	if chunk != "" {
		ch = make(chan error, 1)
		if err := c.register(chunk, waiter{ch: ch}); err != nil {
			return err
		}
	}
	select {
	case c.wlock <- struct{}{}:
	case <-c.closed:
		return c.closeErr() // close answered ch, if any
	case <-ctx.Done():
		if ch != nil {
			c.unregister(chunk, waiter{ch: ch})
		}
		return ctx.Err()
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(o.cfg.AckTimeout.D()))
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetWriteDeadline(time.Unix(1, 0)) })
	sent := time.Now()
	_, err := c.nc.Write(frame)
	stop()
	<-c.wlock
	wrote()
	if err != nil {
		if ctx.Err() != nil {
			// A frame cut short leaves the stream unusable, but the server
			// is not to blame.
			c.close(fmt.Errorf("write interrupted: %w", ctx.Err()), false)
			return ctx.Err()
		}
		err = &opError{"write", err}
		c.close(err, true)
		return err
	}
	if ch == nil {
		c.delivered()
		return nil
	}
	t := time.NewTimer(o.cfg.AckTimeout.D())
	defer t.Stop()
	select {
	case err = <-ch:
	case <-t.C:
		select {
		case err = <-ch: // came just in time
		default:
			err = &opError{"ack_timeout", fmt.Errorf("no ack for chunk %s within %s", chunk, o.cfg.AckTimeout.D())}
			c.close(err, true)
			if <-ch == nil {
				err = nil // acknowledged while the connection was being closed
			}
		}
	case <-ctx.Done():
		c.unregister(chunk, waiter{ch: ch})
		select {
		case err = <-ch:
		default:
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	o.m.acks.Inc()
	o.m.latency.Observe(time.Since(sent).Seconds())
	c.delivered()
	return nil
}

func (c *conn) delivered() {
	c.used.Store(true)
	c.s.ok()
	if c.oneShot {
		c.close(errors.New("the server asked for one request per connection"), false)
	}
}

// readLoop reads the server's answers until the connection ends.
func (c *conn) readLoop() {
	defer c.s.o.wg.Done()
	if !c.s.o.cfg.RequireAck {
		// No acks expected: read only to notice the server going away.
		_, err := io.Copy(io.Discard, c.nc)
		if err == nil {
			err = io.EOF
		}
		c.close(c.readError(err), c.readFault())
		return
	}
	for {
		id, err := c.dec.NextAck()
		if err != nil {
			c.close(c.readError(err), c.readFault())
			return
		}
		c.acked.Store(true)
		c.resolve(id)
	}
}

// readFault says whether a connection the server ended is the server's
// failure: yes when chunks wait on it or none ever went through.
func (c *conn) readFault() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0 || !c.used.Load()
}

func (c *conn) readError(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		err = errors.New("connection closed by the server")
	case errors.Is(err, forwardproto.ErrMalformed) && c.s.o.cfg.SharedKey == "" && !c.acked.Load():
		err = fmt.Errorf("the server's answer is not an ack (does it require shared_key?): %w", err)
	}
	return &opError{"read", err}
}
