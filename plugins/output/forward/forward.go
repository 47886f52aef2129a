// Package forward is the forward output: it ships chunks to aggregators,
// fluentd or fluent-bit with the Fluentd forward protocol, as
// PackedForward (optionally gzip-compressed), waiting for acknowledgements.
//
//	outputs:
//	  - type: forward
//	    match: "**"
//	    servers: [agg-0:24224, agg-1:24224]
//	    require_ack: true
//	    compress: gzip
//
// Every chunk carries an id derived from (sender id, partition, offset):
// the sender id is made once and kept in data_dir, so a chunk resent after
// a crash carries the same id and a logship receiver stores it once.
// Several chunks of a partition are in flight on one connection; acks are
// matched by id. A failed chunk (connection error, ack timeout, refused
// handshake) is resent with exponential backoff and jitter, on the next
// healthy server when there are several.
package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	crand "crypto/rand"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
)

// Factory registers the forward output.
func Factory() pipeline.Factory {
	return pipeline.Factory{
		Type:      "forward",
		Kind:      pipeline.KindOutput,
		NewConfig: func() pipeline.Config { return defaultConfig() },
		Create: func(set pipeline.Settings, cfg pipeline.Config) (any, error) {
			return New(set, cfg.(*Config))
		},
	}
}

var (
	acksTotal  = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_out", Name: "acks_total", Help: "Chunks acknowledged by a receiver."}, []string{"component"})
	ackLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "logship", Subsystem: "forward_out", Name: "ack_latency_seconds", Help: "From sending a chunk to its ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"component"})
	reconnects = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_out", Name: "connects_total", Help: "Connections made to receivers."}, []string{"component", "server"})
	serverUp   = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "forward_out", Name: "server_up", Help: "1 while the last attempt on a server succeeded."}, []string{"component", "server"})
)

// Output is a running forward output.
type Output struct {
	set     pipeline.Settings
	cfg     *Config
	log     *zap.Logger
	sender  [6]byte
	comp    forwardproto.Compression
	tlsConf *tls.Config
	servers []*server
	encs    sync.Pool

	acks    prometheus.Counter
	latency prometheus.Observer
}

// New builds the output; it dials lazily.
func New(set pipeline.Settings, cfg *Config) (*Output, error) {
	o := &Output{set: set, cfg: cfg, log: set.Logger}
	if o.log == nil {
		o.log = zap.NewNop()
	}
	if cfg.Compress == "gzip" {
		o.comp = forwardproto.CompressGzip
	}
	if cfg.SelfHostname == "" {
		c := *cfg
		c.SelfHostname, _ = os.Hostname()
		o.cfg = &c
	}
	if cfg.TLS.Enabled() {
		tc, err := clientTLS(cfg)
		if err != nil {
			return nil, err
		}
		o.tlsConf = tc
	}
	reg := set.Metrics.Registerer
	l := prometheus.Labels{"component": set.Name}
	o.acks = pipeline.RegisterOnce(reg, acksTotal).With(l)
	o.latency = pipeline.RegisterOnce(reg, ackLatency).With(l)
	rc := pipeline.RegisterOnce(reg, reconnects)
	up := pipeline.RegisterOnce(reg, serverUp)
	for _, addr := range cfg.Servers {
		o.servers = append(o.servers, &server{o: o, addr: addr,
			connects: rc.WithLabelValues(set.Name, addr), up: up.WithLabelValues(set.Name, addr)})
	}
	o.encs.New = func() any { return forwardproto.NewEncoder() }
	return o, nil
}

func clientTLS(cfg *Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.TLS.InsecureSkipVerify, ServerName: cfg.TLS.ServerName} //nolint:gosec // the user's explicit choice
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no certificate in %s", cfg.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Start loads (or makes) the sender id.
func (o *Output) Start(context.Context) error {
	id, err := loadSenderID(o.set.DataDir, o.set.Name)
	if err != nil {
		return fmt.Errorf("sender id: %w", err)
	}
	o.sender = id
	return nil
}

// SenderID is the id this output's chunk ids start with.
func (o *Output) SenderID() [6]byte { return o.sender }

// loadSenderID reads DataDir/output/NAME/sender-id, creating it once.
func loadSenderID(dataDir, name string) ([6]byte, error) {
	var id [6]byte
	if dataDir == "" {
		_, err := crand.Read(id[:])
		return id, err
	}
	dir := filepath.Join(dataDir, "output", name)
	path := filepath.Join(dir, "sender-id")
	if b, err := os.ReadFile(path); err == nil {
		if n, err := hex.Decode(id[:], b[:min(len(b), 12)]); err == nil && n == 6 {
			return id, nil
		}
	}
	if _, err := crand.Read(id[:]); err != nil {
		return id, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return id, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(hex.EncodeToString(id[:])+"\n"), 0o644); err != nil {
		return id, err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = errors.Join(f.Sync(), f.Close())
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = errors.Join(d.Sync(), d.Close())
		}
	}
	return id, err
}

// Write delivers one batch synchronously (the runner uses WriteAsync).
func (o *Output) Write(ctx context.Context, b pipeline.Batch) error {
	ch := make(chan error, 1)
	o.WriteAsync(ctx, b, func(err error) { ch <- err })
	return <-ch
}

// MaxInFlight implements pipeline.PipelinedOutput.
func (o *Output) MaxInFlight() int { return o.cfg.MaxInFlight }

// WriteAsync sends b and retries until it is acknowledged or ctx ends.
func (o *Output) WriteAsync(ctx context.Context, b pipeline.Batch, done func(error)) {
	enc := o.encs.Get().(*forwardproto.Encoder)
	chunk := ""
	if o.cfg.RequireAck {
		chunk = forwardproto.ChunkID(o.sender, uint16(b.Partition), b.Offset)
	}
	frame, err := enc.AppendPackedForward(nil, b.Tag, b.Entries, b.Count, chunk, o.comp)
	o.encs.Put(enc)
	if err != nil {
		done(pipeline.Permanent(err))
		return
	}
	go o.deliver(ctx, b, chunk, frame, done)
}

func (o *Output) deliver(ctx context.Context, b pipeline.Batch, chunk string, frame []byte, done func(error)) {
	wait := o.cfg.RetryMin.D()
	for attempt := 0; ; attempt++ {
		srv := o.pick(b.Partition, attempt)
		err := srv.send(ctx, chunk, frame)
		if err == nil {
			srv.healthy()
			done(nil)
			return
		}
		if ctx.Err() != nil {
			done(ctx.Err())
			return
		}
		srv.failed(err)
		o.set.Metrics.Retries.Inc()
		d := wait/2 + time.Duration(rand.Int64N(int64(wait)))
		if attempt < len(o.servers)-1 {
			d = 0 // another server first
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			done(ctx.Err())
			return
		}
		if attempt >= len(o.servers)-1 {
			wait = min(2*wait, o.cfg.RetryMax.D())
		}
	}
}

// pick chooses the server for a partition's attempt: its preferred one,
// then the next ones, skipping those that failed lately while a healthy
// one is left.
func (o *Output) pick(partition, attempt int) *server {
	n := len(o.servers)
	first := (partition + attempt) % n
	for i := range n {
		s := o.servers[(first+i)%n]
		if s.usable() {
			return s
		}
	}
	return o.servers[first]
}

// Start, Stop: Stop closes the connections; in-flight deliveries end with
// their context.
func (o *Output) Stop(context.Context) error {
	for _, s := range o.servers {
		s.close()
	}
	return nil
}

// server is one receiver with at most one connection.
type server struct {
	o        *Output
	addr     string
	mu       sync.Mutex
	conn     *clientConn
	dialing  chan struct{}
	downTill time.Time
	fails    int
	connects prometheus.Counter
	up       prometheus.Gauge
}

func (s *server) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().After(s.downTill)
}

func (s *server) healthy() {
	s.mu.Lock()
	s.fails, s.downTill = 0, time.Time{}
	s.mu.Unlock()
	s.up.Set(1)
}

func (s *server) failed(err error) {
	s.mu.Lock()
	s.fails++
	n := s.fails
	s.downTill = time.Now().Add(min(time.Duration(n)*s.o.cfg.RetryMin.D(), s.o.cfg.RetryMax.D()))
	s.mu.Unlock()
	s.up.Set(0)
	if n == 1 || n%10 == 0 {
		s.o.log.Warn("forward delivery failed; retrying", zap.String("server", s.addr), zap.Int("failures", n), zap.Error(err))
	}
}

func (s *server) close() {
	s.mu.Lock()
	c := s.conn
	s.conn = nil
	s.mu.Unlock()
	if c != nil {
		c.close(errors.New("output stopped"))
	}
}

// get returns the live connection, dialing one if needed.
func (s *server) get(ctx context.Context) (*clientConn, error) {
	for {
		s.mu.Lock()
		if s.conn != nil && !s.conn.isClosed() {
			c := s.conn
			s.mu.Unlock()
			return c, nil
		}
		if s.dialing != nil {
			ch := s.dialing
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		s.dialing = ch
		s.mu.Unlock()
		c, err := s.dial(ctx)
		s.mu.Lock()
		s.dialing = nil
		if err == nil {
			s.conn = c
		}
		s.mu.Unlock()
		close(ch)
		return c, err
	}
}

func (s *server) dial(ctx context.Context) (*clientConn, error) {
	cfg := s.o.cfg
	d := net.Dialer{Timeout: cfg.ConnectTimeout.D(), KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if s.o.tlsConf != nil {
		tc := s.o.tlsConf.Clone()
		if tc.ServerName == "" {
			tc.ServerName, _, _ = net.SplitHostPort(s.addr)
		}
		tconn := tls.Client(nc, tc)
		hctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout.D())
		err := tconn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		nc = tconn
	}
	dec := forwardproto.NewDecoder(nc, forwardproto.Limits{MaxFrameBytes: 1 << 20})
	if cfg.SharedKey != "" {
		_ = nc.SetDeadline(time.Now().Add(cfg.ConnectTimeout.D()))
		if err := handshake(nc, dec, cfg); err != nil {
			nc.Close()
			return nil, err
		}
		_ = nc.SetDeadline(time.Time{})
	}
	s.connects.Inc()
	c := &clientConn{nc: nc, dec: dec, pending: map[string]chan error{}, closed: make(chan struct{}), o: s.o}
	if cfg.RequireAck {
		go c.readAcks()
	}
	return c, nil
}

func handshake(nc net.Conn, dec *forwardproto.Decoder, cfg *Config) error {
	helo, err := dec.NextHelo()
	if err != nil {
		return fmt.Errorf("handshake: waiting for HELO: %w", err)
	}
	auth := forwardproto.ClientAuth{Hostname: cfg.SelfHostname, SharedKey: cfg.SharedKey, Username: cfg.Username, Password: cfg.Password}
	salt := forwardproto.NewSalt()
	ping, err := forwardproto.AppendPing(nil, helo, auth, salt)
	if err != nil {
		return err
	}
	if _, err := nc.Write(ping); err != nil {
		return err
	}
	pong, err := dec.NextPong()
	if err != nil {
		return fmt.Errorf("handshake: waiting for PONG: %w", err)
	}
	return forwardproto.VerifyPong(pong, helo, auth, salt)
}

// send writes one frame and, with require_ack, waits for its ack.
func (s *server) send(ctx context.Context, chunk string, frame []byte) error {
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	return c.send(ctx, chunk, frame)
}

// clientConn is one connection: writes are serialized, acks are read by
// one goroutine and matched to the waiting chunks by id.
type clientConn struct {
	o       *Output
	nc      net.Conn
	dec     *forwardproto.Decoder
	wmu     sync.Mutex
	mu      sync.Mutex
	pending map[string]chan error
	closed  chan struct{}
	err     error
}

func (c *clientConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *clientConn) close(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pend := c.pending
	c.pending = map[string]chan error{}
	close(c.closed)
	c.mu.Unlock()
	c.nc.Close()
	for _, ch := range pend {
		ch <- err
	}
}

func (c *clientConn) readAcks() {
	for {
		id, err := c.dec.NextAck()
		if err != nil {
			c.close(fmt.Errorf("reading acks: %w", err))
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ok {
			ch <- nil
		}
	}
}

func (c *clientConn) send(ctx context.Context, chunk string, frame []byte) error {
	var ch chan error
	if chunk != "" {
		ch = make(chan error, 1)
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return c.err
		}
		c.pending[chunk] = ch
		c.mu.Unlock()
	}
	start := time.Now()
	c.wmu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.o.cfg.AckTimeout.D()))
	_, err := c.nc.Write(frame)
	c.wmu.Unlock()
	if err != nil {
		c.close(fmt.Errorf("write: %w", err))
		return err
	}
	if ch == nil {
		return nil
	}
	t := time.NewTimer(c.o.cfg.AckTimeout.D())
	defer t.Stop()
	select {
	case err := <-ch:
		if err == nil {
			c.o.acks.Inc()
			c.o.latency.Observe(time.Since(start).Seconds())
		}
		return err
	case <-t.C:
		err := fmt.Errorf("no ack for chunk %s within %s", chunk, c.o.cfg.AckTimeout.D())
		c.close(err)
		return err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, chunk)
		c.mu.Unlock()
		return ctx.Err()
	}
}
