// Package forward is the forward input: it accepts the Fluentd Forward
// Protocol v1 from applications (fluent-logger libraries), from fluentd and
// fluent-bit, and from other logship processes.
//
//	inputs:
//	  - type: forward
//	    listen: 0.0.0.0:24224
//	    shared_key: ""          # set it to require the HELO/PING/PONG handshake
//	    tls: {cert_file: "", key_file: "", ca_file: ""}
//
// Every mode is accepted (Message, Forward, PackedForward,
// CompressedPackedForward, JSON arrays), every time form, and the UDP
// heartbeat. A request with a `chunk` option is answered with
// `{"ack": chunk}` only once its events are durable in the buffer. When the
// buffer is full the connection is simply not read (TCP backpressure);
// nothing is dropped. A malformed request closes its own connection, is
// logged and counted; other connections never notice. A chunk id already
// stored is acknowledged again without being stored twice (see dedup).
//
// # Limits
//
// Whatever clients send, the input's memory, CPU and file descriptors stay
// bounded (every limit is an option; see Config for ranges):
//
//   - max_frame_bytes (32MiB): one request on the wire. Larger: the
//     connection is closed, counted (errors_total reason frame_too_large)
//     and logged; the client resends it forever, so make its chunks smaller.
//   - max_decompressed_bytes (64MiB): one request's events once
//     decompressed or rewritten. Larger: closed, reason
//     decompressed_too_large.
//   - max_entries_per_request (1000000): events in one request. More:
//     closed, reason too_many_entries.
//   - max_depth (128): maps and arrays nested in one record, the record
//     counting as 1 (what fluentd's msgpack-ruby and the tail input's JSON
//     parser allow, so a record the agent tails passes). A deeper event is
//     dropped (dropped_records_total reason too_deep) and logged at most
//     every 10s; the rest of its request is stored and acknowledged.
//   - memory_limit (256MiB): the decoding buffers of all connections
//     together, beyond the 76KiB an idle connection keeps. When it is spent
//     connections needing more stop being read (TCP backpressure) until
//     others finish; one connection at a time may exceed it to finish a
//     request already half read, so the worst case is twice memory_limit. A
//     request needing more than memory_limit alone is refused (reason
//     memory_limit). Per connection add about 100KiB (idle buffers,
//     goroutines).
//   - max_connections (1024): one more is closed as soon as accepted,
//     counted in forward_in_connections_closed_total (reason
//     max_connections, as every close below) and logged at most every 10s.
//   - idle_timeout (5m): a connection that completes no request for that
//     long, while no acknowledgement of it is pending, is closed (reason
//     idle_timeout).
//   - handshake_timeout (10s) and max_handshake_bytes (4KiB): the TLS
//     handshake and the HELO/PING/PONG exchange must finish in time (reason
//     handshake_timeout), and a PING (read before the client is
//     authenticated) must be small (errors_total reason auth).
//   - A client that closes its connection while the input applies
//     backpressure to it is noticed (the kernel's TCP state, checked every
//     250ms) and its connection closed (reason peer_gone): chunks it was not
//     acknowledged for are resent by it, and a resent chunk still being stored waits for the
//     first copy (dedup).
//   - max_pending_acks (64) bounds what one connection holds;
//     dedup_window (1000000 ids on an aggregator, 100000 on an agent,
//     about 28 bytes of RAM each, each kept dedup_retention) what the
//     chunk-id window and its journal hold. An id forgotten sooner than
//     dedup_retention (10m) after it was stored is counted
//     (forward_in_dedup_evicted_early_total) and logged at most every 10s:
//     the window is too small for the load, a resend could be stored twice.
//
// Accept errors that pass (out of file descriptors, say) are retried with a
// backoff and counted (errors_total reason accept); any other stops the
// listener and Input.Ready reports it, so that /readyz can turn false. A
// failed chunk-id journal write or compaction is counted (reason
// dedup_journal), logged and retried; dedup never turns off.
package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/ratelog"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
)

// Factory registers the forward input.
func Factory() pipeline.Factory {
	return pipeline.NewInputFactory("forward", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Input, error) { return New(set, cfg) })
}

var (
	connsOpen    = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "forward_in", Name: "connections", Help: "Open forward connections."}, []string{"component"})
	connsSeen    = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "connections_total", Help: "Forward connections accepted."}, []string{"component"})
	acksSent     = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "acks_total", Help: "Chunk acknowledgements sent."}, []string{"component"})
	dupChunks    = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "duplicate_chunks_total", Help: "Chunks acknowledged again without being stored (resent ids)."}, []string{"component"})
	dedupEarly   = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "dedup_evicted_early_total", Help: "Chunk ids forgotten (to make room in dedup_window) sooner than dedup_retention after they were stored: a resend of them would be stored twice."}, []string{"component"})
	dedupAge     = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "forward_in", Name: "dedup_horizon_seconds", Help: "Age of the chunk id last forgotten (expired at dedup_retention, or to make room in dedup_window): how far back resends are recognised (keep it at dedup_retention or above)."}, []string{"component"})
	connsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "connections_closed_total", Help: "Forward connections closed by the input, by reason (max_connections, idle_timeout, handshake_timeout, peer_gone)."}, []string{"component", "reason"})
	memInUse     = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "forward_in", Name: "memory_bytes", Help: "Decoding memory held against memory_limit."}, []string{"component"})
	ackWait      = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "logship", Subsystem: "forward_in", Name: "ack_latency_seconds", Help: "From a chunk's arrival to its ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"component"})
)

var (
	_ pipeline.Input   = (*Input)(nil)
	_ pipeline.Readier = (*Input)(nil)
)

// Ready (pipeline.Readier) reports a listener that failed for good, so that
// /readyz turns false.
var (
	_ pipeline.Input   = (*Input)(nil)
	_ pipeline.Readier = (*Input)(nil)
)

// Input is a running forward listener.
type Input struct {
	set pipeline.Settings
	cfg *Config
	log *zap.Logger
	rl  *ratelog.Logger

	tlsConf *tls.Config
	users   map[string]string
	dedup   *dedup
	// positions: chunks are stored with their ids (floor.go).
	positions bool
	mem       *budget
	listen    func(network, addr string) (net.Listener, error) // net.Listen; tests wrap it

	ln     net.Listener
	udp    net.PacketConn
	ctx    context.Context // ends when Stop begins
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[*conn]struct{}
	state  error // Ready's answer

	open             prometheus.Gauge
	seen, acks, dups prometheus.Counter
	dedupEarly       prometheus.Counter
	dedupAge         prometheus.Gauge
	closed           *prometheus.CounterVec
	memGauge         prometheus.Gauge
	ackLatency       prometheus.Observer

	// chunks read and not yet answered, over every connection (see ack)
	unanswered atomic.Int64
}

// errNotStarted and errStopped are Ready's answers before Start and after
// Stop.
var (
	errNotStarted = errors.New("forward input: not listening yet")
	errStopped    = errors.New("forward input: stopped")
)

// New builds the input; Start listens.
func New(set pipeline.Settings, cfg *Config) (*Input, error) {
	in := &Input{set: set, cfg: cfg, log: set.Logger, conns: map[*conn]struct{}{}, listen: net.Listen, state: errNotStarted}
	if cfg.SelfHostname == "" {
		host := set.NodeName // service.node_name: NODE_NAME or the hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		c := *cfg
		c.SelfHostname = host
		in.cfg = &c
	}
	if in.log == nil {
		in.log = zap.NewNop()
	}
	in.rl = ratelog.New(in.log, 10*time.Second)
	if cfg.TLS.CertFile != "" {
		tc, err := serverTLS(cfg)
		if err != nil {
			return nil, err
		}
		in.tlsConf = tc
	}
	if len(cfg.Users) > 0 {
		in.users = map[string]string{}
		for _, u := range cfg.Users {
			in.users[u.Username] = u.Password
		}
	}
	in.mem = newBudget(int64(cfg.MemoryLimit))
	reg := set.Metrics.Registerer
	l := prometheus.Labels{"component": set.Name}
	in.open = pipeline.RegisterOnce(reg, connsOpen).With(l)
	in.seen = pipeline.RegisterOnce(reg, connsSeen).With(l)
	in.acks = pipeline.RegisterOnce(reg, acksSent).With(l)
	in.dups = pipeline.RegisterOnce(reg, dupChunks).With(l)
	in.dedupEarly = pipeline.RegisterOnce(reg, dedupEarly).With(l)
	in.dedupAge = pipeline.RegisterOnce(reg, dedupAge).With(l)
	in.closed = pipeline.RegisterOnce(reg, connsRefused).MustCurryWith(l)
	in.memGauge = pipeline.RegisterOnce(reg, memInUse).With(l)
	in.ackLatency = pipeline.RegisterOnce(reg, ackWait).With(l)
	return in, nil
}

func serverTLS(cfg *Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no certificate in %s", cfg.TLS.CAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Addr is the address the input listens on (after Start).
func (in *Input) Addr() net.Addr { return in.ln.Addr() }

// Ready reports whether the input listens and accepts connections: nil
// once Start succeeded, an error before, after Stop, and once accepting
// failed for good (the listener broke). The service polls it for /readyz.
func (in *Input) Ready() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.state
}

func (in *Input) setState(err error) {
	in.mu.Lock()
	in.state = err
	in.mu.Unlock()
}

// Start listens on TCP (and UDP for heartbeats) and accepts connections.
// When it fails it leaves nothing open.
func (in *Input) Start(_ context.Context, emit pipeline.Emitter) (err error) {
	if in.cfg.Dedup {
		dir := ""
		if in.set.DataDir != "" {
			dir = filepath.Join(in.set.DataDir, "input", in.set.Name)
		}
		retention := in.cfg.DedupRetention.D()
		d, derr := openDedup(dir, in.cfg.DedupWindow, retention, func(err error) {
			in.set.Metrics.Error("dedup_journal")
			in.rl.Error("dedup", "chunk-id journal: write or compaction failed; dedup goes on, compaction is retried", zap.Error(err))
		}, func(age time.Duration, early bool) {
			in.dedupAge.Set(age.Seconds())
			if early {
				in.dedupEarly.Inc()
				in.rl.Warn("dedup_early", "chunk id forgotten sooner than dedup_retention: dedup_window is too small for this load, a resend of it would be stored twice; raise dedup_window (see docs/operations.md)",
					zap.Duration("age", age), zap.Duration("dedup_retention", retention), zap.Int("dedup_window", in.cfg.DedupWindow))
			}
		})
		if derr != nil {
			return fmt.Errorf("dedup window: %w", derr)
		}
		in.dedup = d
		defer func() {
			if err != nil {
				_ = in.dedup.close()
				in.dedup = nil
			}
		}()
		if pos, ok := emit.(pipeline.Positions); ok && d.journal != nil {
			// Chunks are stored with their ids: find those a kill kept
			// out of the journal, then keep the floor moving.
			n, rerr := d.recoverFrom(context.Background(), pos)
			if rerr != nil {
				in.set.Logger.Warn("chunk ids of stored chunks not read back from the buffer; a resend of a chunk stored just before the last stop may be stored twice", zap.Error(rerr))
			}
			if n > 0 {
				in.set.Logger.Info("chunk ids recovered from the buffer (stored, not yet journaled when the process stopped)", zap.Int("ids", n))
			}
			in.positions = true
			d.keepFloor(pos)
		}
	}
	ln, err := in.listen("tcp", in.cfg.Listen)
	if err != nil {
		return err
	}
	in.ln = ln
	if in.cfg.Heartbeat {
		udp, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			return fmt.Errorf("udp heartbeat: %w", err)
		}
		in.udp = udp
		in.wg.Add(1)
		go in.heartbeats()
	}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.setState(nil)
	in.wg.Add(2)
	go in.accept(emit)
	go in.janitor()
	in.log.Info("forward input listening", zap.String("addr", ln.Addr().String()), zap.Bool("tls", in.tlsConf != nil), zap.Bool("auth", in.cfg.SharedKey != ""))
	return nil
}

func (in *Input) heartbeats() {
	defer in.wg.Done()
	buf := make([]byte, 512)
	for {
		n, addr, err := in.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if n == 1 && buf[0] == 0 {
			_, _ = in.udp.WriteTo([]byte{0}, addr)
		}
	}
}

// accept accepts connections until Stop. Errors that may pass (out of file
// descriptors, a connection aborted) are retried with a backoff up to 1s;
// any other ends accepting and turns Ready into that error.
func (in *Input) accept(emit pipeline.Emitter) {
	defer in.wg.Done()
	var delay time.Duration
	for {
		c, err := in.ln.Accept()
		if err != nil {
			if in.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || temporaryAcceptError(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				in.set.Metrics.Error("accept")
				in.rl.Warn("accept", "accept failed; retrying", zap.Error(err), zap.Duration("in", delay))
				select {
				case <-time.After(delay):
				case <-in.ctx.Done():
					return
				}
				continue
			}
			in.set.Metrics.Error("accept")
			in.log.Error("accept failed for good; the input accepts no more connections and is not ready", zap.Error(err))
			in.setState(fmt.Errorf("forward input: accepting connections failed: %w", err))
			return
		}
		delay = 0
		in.mu.Lock()
		full := len(in.conns) >= in.cfg.MaxConnections
		in.mu.Unlock()
		if full {
			// Counted before the close: whoever sees the close sees it
			// counted.
			in.closed.WithLabelValues("max_connections").Inc()
			in.set.Metrics.Error("max_connections")
			in.rl.Warn("max_connections", "connection refused: max_connections reached", zap.Int("max_connections", in.cfg.MaxConnections), zap.String("peer", c.RemoteAddr().String()))
			c.Close()
			continue
		}
		if in.tlsConf != nil {
			c = tls.Server(c, in.tlsConf)
		}
		cn := newConn(in, c)
		in.mu.Lock()
		in.conns[cn] = struct{}{}
		in.mu.Unlock()
		in.open.Inc()
		in.seen.Inc()
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			cn.serve(emit)
			in.mu.Lock()
			delete(in.conns, cn)
			in.mu.Unlock()
			in.open.Dec()
		}()
	}
}

// janitorEvery is how often the janitor looks at blocked connections.
const janitorEvery = 250 * time.Millisecond

// janitor closes the connections whose client went away (a FIN or a
// reset) while the input did not read them (backpressure: waiting for the
// buffer, for pending acknowledgements or for memory), which reading would
// notice only once the backpressure ends, and publishes the memory in use.
// Such a client gets no further acknowledgement: it resends what was not
// acknowledged, and dedup stores it once.
func (in *Input) janitor() {
	defer in.wg.Done()
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	var blocked []*conn
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		}
		in.memGauge.Set(float64(in.mem.inUse()))
		now := time.Now().UnixNano()
		blocked = blocked[:0]
		in.mu.Lock()
		for cn := range in.conns {
			if since := cn.blockedSince.Load(); since != 0 && now-since >= int64(janitorEvery) {
				blocked = append(blocked, cn)
			}
		}
		in.mu.Unlock()
		for _, cn := range blocked {
			if peerGone(cn.c) && cn.gone.CompareAndSwap(false, true) {
				in.closed.WithLabelValues("peer_gone").Inc()
				in.log.Debug("client closed its connection while it was not read (backpressure); closing ours", zap.String("peer", cn.peer))
				cn.cancel()
				// Free the socket now, even if acks are still pending (the
				// writer still records their ids). Not tls.Conn.Close: it
				// may wait to send an alert.
				if tc, ok := cn.c.(*tls.Conn); ok {
					tc.NetConn().Close()
				} else {
					cn.c.Close()
				}
			}
		}
	}
}

// Stop stops accepting, stops reading every connection, waits until the
// acknowledgement of every chunk already read is sent (or ctx is done) and
// closes the connections.
func (in *Input) Stop(ctx context.Context) error {
	if in.cancel == nil {
		return nil
	}
	in.setState(errStopped)
	in.cancel()
	in.ln.Close()
	if in.udp != nil {
		in.udp.Close()
	}
	in.mu.Lock()
	for c := range in.conns {
		c.stopReading()
	}
	in.mu.Unlock()
	done := make(chan struct{})
	go func() { in.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		in.mu.Lock()
		for c := range in.conns {
			c.c.Close()
		}
		in.mu.Unlock()
		<-done
	}
	if in.dedup != nil {
		err = errors.Join(err, in.dedup.close())
	}
	return err
}

// conn is one client connection: a reader goroutine decoding requests and
// emitting them, and a writer goroutine sending acks once chunks are
// durable (or the goroutine that made a chunk durable, see ack).
type conn struct {
	in     *Input
	c      net.Conn
	peer   string
	ip     string
	acks   chan ackJob
	slots  chan struct{} // pending acks; full means stop reading
	ctx    context.Context
	cancel context.CancelFunc
	mem    *account

	// The ack writer's state, under wmu: held by the writer goroutine for
	// each job, or by ack when it answers a chunk itself.
	wmu    sync.Mutex
	queued atomic.Int64    // jobs sent to acks and not yet answered
	raw    syscall.RawConn // nil (TLS, or not a socket): acks go through the writer goroutine
	out    []byte
	broken bool      // a write failed: no more acks
	armed  time.Time // when the write deadline was last moved on

	blockedSince atomic.Int64 // unix nanoseconds; 0 while reading or idle
	gone         atomic.Bool  // the client closed while we did not read
}

type ackJob struct {
	rest    []byte // the unwritten end of an ack (its id is recorded already)
	chunk   []byte
	err     error
	arrived time.Time
	fresh   bool // the chunk was stored (not a duplicate): record its id
	json    bool // answer in JSON
	events  int  // events in the chunk
}

func newConn(in *Input, c net.Conn) *conn {
	peer := c.RemoteAddr().String()
	ip, _, _ := net.SplitHostPort(peer)
	cn := &conn{in: in, c: c, peer: peer, ip: ip,
		acks: make(chan ackJob, in.cfg.MaxPendingAcks+1), slots: make(chan struct{}, in.cfg.MaxPendingAcks)}
	cn.ctx, cn.cancel = context.WithCancel(in.ctx)
	if sc, ok := c.(syscall.Conn); ok {
		cn.raw, _ = sc.SyscallConn()
	}
	cn.mem = &account{b: in.mem, ctx: cn.ctx, waiting: cn.waitingForMemory}
	return cn
}

// waitingForMemory marks the connection blocked while its decoder waits for
// memory_limit, in the middle of reading. The wait is the input's doing,
// not the client's: the idle deadline starts again once it ends.
func (cn *conn) waitingForMemory(b bool) {
	cn.blocked(b)
	if !b {
		_ = cn.c.SetReadDeadline(time.Now().Add(cn.in.cfg.IdleTimeout.D()))
		if cn.ctx.Err() != nil {
			cn.stopReading() // Stop's deadline wins
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (cn *conn) stopReading() { _ = cn.c.SetReadDeadline(time.Now()) }

// blocked marks the connection as not read because of the input
// (backpressure), or read again.
func (cn *conn) blocked(b bool) {
	if b {
		cn.blockedSince.Store(time.Now().UnixNano())
	} else {
		cn.blockedSince.Store(0)
	}
}

func (cn *conn) serve(emit pipeline.Emitter) {
	in := cn.in
	m := in.set.Metrics
	writerDone := make(chan struct{})
	go cn.writer(writerDone)
	defer func() {
		// Wait for every pending ack before closing; the writer still
		// records the ids of chunks stored after the client went away. A
		// client that closes meanwhile is noticed by the janitor, which
		// closes the socket at once.
		cn.blocked(true)
		for range cap(cn.slots) {
			cn.slots <- struct{}{}
		}
		cn.blocked(false)
		close(cn.acks)
		<-writerDone
		cn.c.Close()
		cn.cancel()
		cn.mem.release()
	}()

	if tc, ok := cn.c.(*tls.Conn); ok {
		hctx, cancel := context.WithTimeout(cn.ctx, in.cfg.HandshakeTimeout.D())
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			if in.ctx.Err() == nil {
				if isTimeout(err) {
					in.closed.WithLabelValues("handshake_timeout").Inc()
				}
				m.Error("tls_handshake")
				in.rl.Warn("tls", "TLS handshake failed", zap.String("peer", cn.peer), zap.Error(err))
			}
			return
		}
	}
	lim := in.cfg.limits()
	lim.Memory = cn.mem
	dec := forwardproto.NewDecoder(cn.c, lim)
	if in.cfg.SharedKey != "" {
		if err := cn.handshake(dec); err != nil {
			if in.ctx.Err() == nil {
				if isTimeout(err) {
					in.closed.WithLabelValues("handshake_timeout").Inc()
				}
				m.Error("auth")
				in.rl.Warn("auth", "forward handshake refused", zap.String("peer", cn.peer), zap.Error(err))
			}
			return
		}
	}
	var rec []byte
	idle := in.cfg.IdleTimeout.D()
	// The idle deadline is moved on only once it is idle/100 old: setting
	// it costs a timer update, and a connection sending a request every
	// few microseconds need not pay that for each. An idle connection is
	// then closed up to idle/100 early, never late.
	slack := idle / 100
	var armed time.Time
	for {
		if now := time.Now(); now.Sub(armed) >= slack {
			_ = cn.c.SetReadDeadline(now.Add(idle))
			armed = now
		}
		if cn.ctx.Err() != nil { // after the deadline: Stop's stopReading wins
			return
		}
		req, err := dec.Next()
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF), cn.ctx.Err() != nil:
			case errors.As(err, &ne) && ne.Timeout():
				if len(cn.slots) > 0 {
					armed = time.Time{}
					continue // the client waits for us: not idle
				}
				in.closed.WithLabelValues("idle_timeout").Inc()
				in.log.Debug("idle connection closed", zap.String("peer", cn.peer), zap.Duration("idle_timeout", idle))
			case errors.Is(err, forwardproto.ErrFrameTooLarge):
				m.Error("frame_too_large")
				in.rl.Error("frame_too_large", "request larger than max_frame_bytes refused; the client will resend it forever unless its chunks get smaller", zap.String("peer", cn.peer), zap.Error(err), zap.Int64("max_frame_bytes", int64(in.cfg.MaxFrameBytes)))
			case errors.Is(err, forwardproto.ErrDecompressedTooLarge):
				m.Error("decompressed_too_large")
				in.rl.Error("decompressed_too_large", "request inflates beyond max_decompressed_bytes; connection closed", zap.String("peer", cn.peer), zap.Error(err))
			case errors.Is(err, forwardproto.ErrTooManyEntries):
				m.Error("too_many_entries")
				in.rl.Error("too_many_entries", "request carries more than max_entries_per_request events; connection closed, the client will resend it forever unless its chunks get smaller", zap.String("peer", cn.peer), zap.Error(err))
			case errors.Is(err, errMemoryLimit):
				m.Error("memory_limit")
				in.rl.Error("memory_limit", "request needs more than memory_limit; connection closed", zap.String("peer", cn.peer), zap.Error(err))
			case errors.Is(err, forwardproto.ErrMalformed):
				m.Error("malformed_frame")
				in.rl.Warn("malformed", "malformed request; connection closed", zap.String("peer", cn.peer), zap.Error(err))
			default:
				if !errors.As(err, &ne) {
					m.Error("read")
					in.rl.Warn("read", "connection error", zap.String("peer", cn.peer), zap.Error(err))
				}
			}
			return
		}
		isJSON, count := req.JSON, req.Count // req is the decoder's: read again by the next Next
		if req.Dropped > 0 {
			if n := req.Dropped - req.TooDeep; n > 0 {
				m.Dropped("invalid_event", n)
			}
			if req.TooDeep > 0 {
				m.Dropped("too_deep", req.TooDeep)
				in.rl.Warn("too_deep", "events nested deeper than max_depth dropped; the rest of their request is stored", zap.String("peer", cn.peer), zap.String("tag", req.Tag), zap.Int("dropped", req.TooDeep), zap.Int("max_depth", in.cfg.MaxDepth))
			}
		}
		arrived := time.Now()
		var chunkID []byte
		if req.HasChunk {
			chunkID = append([]byte(nil), req.Chunk...)
		}
		// One slot per request that waits for an answer or the buffer.
		select {
		case cn.slots <- struct{}{}:
		default:
			cn.blocked(true)
			select {
			case cn.slots <- struct{}{}:
				cn.blocked(false)
			case <-cn.ctx.Done():
				return
			}
		}
		in.unanswered.Add(1)
		if chunkID != nil && in.dedup != nil {
			events := req.Count
			if !in.dedup.begin(chunkID, func(err error) {
				if err == nil {
					// Acknowledged again, not stored again (an error leaves
					// it unacknowledged: the client resends).
					in.dups.Inc()
					m.Duplicates.Add(float64(events))
				}
				cn.send(ackJob{chunk: chunkID, err: err, arrived: arrived, json: isJSON})
			}) {
				continue
			}
		}
		if req.Count == 0 {
			cn.send(ackJob{chunk: chunkID, arrived: arrived, fresh: true, json: isJSON})
			continue
		}
		entries := req.Entries
		if in.cfg.SourceAddressKey != "" {
			need := len(entries) + req.Count*(len(in.cfg.SourceAddressKey)+len(cn.ip)+24)
			if cap(rec) < need {
				if err := cn.mem.set(&cn.mem.rec, int64(need)); err != nil {
					cn.send(ackJob{chunk: chunkID, err: err, arrived: arrived, fresh: true})
					return
				}
				rec = make([]byte, 0, need)
			}
			rec, err = addField(rec[:0], entries, in.cfg.SourceAddressKey, cn.ip)
			if err != nil {
				m.Error("malformed_frame")
				in.rl.Warn("malformed", "malformed entries; connection closed", zap.String("peer", cn.peer), zap.Error(err))
				cn.send(ackJob{chunk: chunkID, err: err, arrived: arrived, fresh: true})
				return
			}
			entries = rec
		}
		cn.blocked(true)
		var src []byte
		if in.positions && chunkID != nil {
			src = chunkID // stored with the chunk: see floor.go
		}
		var own *[]byte
		if in.cfg.SourceAddressKey == "" {
			// The request's memory goes with its chunk, when it can: the
			// buffer keeps it for the outputs reading right behind, which
			// then send the entries from where they were read.
			own = dec.Detach()
		}
		err = emit.Emit(cn.ctx, pipeline.Chunk{Tag: req.Tag, Entries: entries, Count: req.Count, Source: src, Own: own}, func(err error) {
			if src != nil && err == nil {
				in.dedup.stage(chunkID)
			}
			cn.ack(ackJob{chunk: chunkID, err: err, arrived: arrived, fresh: true, json: isJSON, events: count})
		})
		cn.blocked(false)
		if cap(rec) > forwardproto.IdleBytes {
			rec = nil
			_ = cn.mem.set(&cn.mem.rec, 0)
		}
		if err != nil {
			// Stopping, or the client is gone: the chunk was not taken; no
			// ack, the client resends.
			broker.PutBuffer(own)
			cn.send(ackJob{chunk: chunkID, err: err, arrived: arrived, fresh: true})
			return
		}
	}
}

// writer sends acks in the order chunks become durable; it runs until the
// reader closed acks, so a chunk stored after its client went away still
// has its id recorded.
func (cn *conn) writer(done chan<- struct{}) {
	defer close(done)
	for j := range cn.acks {
		cn.wmu.Lock()
		cn.answer(j, false)
		cn.queued.Add(-1)
		cn.wmu.Unlock()
		cn.in.unanswered.Add(-1)
		<-cn.slots
	}
}

// inlineAcks is how many unanswered chunks the input may have for an ack
// to be written by the goroutine that made its chunk durable (see ack).
const inlineAcks = 2

// send queues j for the writer goroutine.
func (cn *conn) send(j ackJob) {
	cn.queued.Add(1)
	cn.acks <- j
}

// ack answers a chunk the buffer is done with. When few chunks wait for
// an answer in the whole input (at most inlineAcks: synchronous senders on
// one or two connections) and the writer goroutine has nothing queued, the
// calling goroutine (the buffer's) records the id and writes the ack
// itself, without blocking: that saves waking the writer goroutine for
// every chunk. With more, the writer goroutines do it in parallel, and the
// buffer's goroutine gets on with the next fdatasync. An ack that cannot
// leave at once (the client does not read, TLS) goes through the writer
// goroutine, which may block; the buffer's goroutine never does. Acks
// keep their order: the writer takes each job under wmu, and queued counts
// what it has not answered.
func (cn *conn) ack(j ackJob) {
	if cn.raw == nil || cn.in.unanswered.Load() > inlineAcks || !cn.wmu.TryLock() {
		cn.send(j)
		return
	}
	if cn.queued.Load() != 0 {
		cn.wmu.Unlock()
		cn.send(j)
		return
	}
	if rest := cn.answer(j, true); rest != nil {
		cn.queued.Add(1) // under wmu: later acks queue behind it
		cn.wmu.Unlock()
		cn.acks <- ackJob{rest: rest, arrived: j.arrived}
		return
	}
	cn.wmu.Unlock()
	cn.in.unanswered.Add(-1)
	<-cn.slots
}

// answer records a stored chunk's id (dedup) and writes its ack, or the
// rest of one. With nowait it writes only what the socket takes at once
// and returns what is left (nil when all of it left); callers hold wmu.
func (cn *conn) answer(j ackJob, nowait bool) []byte {
	b := j.rest
	if b == nil {
		if j.err != nil && pipeline.IsPermanent(j.err) {
			// Never storable (refused for good down the pipeline): dropped
			// on purpose, counted, and acknowledged like a stored chunk so
			// that the client does not resend it forever (fluentd's
			// in_forward acks a chunk whose events it dropped, too).
			cn.in.set.Metrics.Dropped("permanent_error", j.events)
			cn.in.rl.Warn("permanent", "chunk refused for good; dropped and acknowledged so that it is not resent forever",
				zap.String("peer", cn.peer), zap.Int("events", j.events), zap.Error(j.err))
			j.err = nil
		}
		if j.fresh && j.chunk != nil && cn.in.dedup != nil {
			cn.in.dedup.finish(j.chunk, j.err)
		}
		if j.err != nil {
			if !errors.Is(j.err, context.Canceled) {
				cn.in.set.Metrics.Error("not_stored")
				cn.in.rl.Warn("not_stored", "chunk not stored; not acknowledged, the client will resend", zap.String("peer", cn.peer), zap.Error(j.err))
			}
			return nil
		}
		if j.chunk == nil {
			return nil
		}
		cn.out = forwardproto.AppendAck(cn.out[:0], j.chunk, j.json)
		b = cn.out
	}
	if cn.broken {
		return nil
	}
	if nowait {
		n := cn.tryWrite(b)
		if n < len(b) {
			return append([]byte(nil), b[n:]...) // cn.out is reused
		}
	} else {
		// 29 to 30 seconds for the ack to leave: the deadline is moved on
		// once a second, not for every ack.
		if now := time.Now(); now.Sub(cn.armed) >= time.Second {
			_ = cn.c.SetWriteDeadline(now.Add(30 * time.Second))
			cn.armed = now
		}
		if _, err := cn.c.Write(b); err != nil {
			cn.broken = true
			cn.c.Close() // the reader notices and ends
			return nil
		}
	}
	cn.in.acks.Inc()
	cn.in.ackLatency.Observe(time.Since(j.arrived).Seconds())
	return nil
}

// tryWrite writes what the socket takes of b without waiting and returns
// how much; any error leaves the rest (all of b) to a blocking write.
func (cn *conn) tryWrite(b []byte) int {
	n := 0
	_ = cn.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true // never wait for the socket here
	})
	return n
}

func (cn *conn) handshake(dec *forwardproto.Decoder) error {
	_ = cn.c.SetDeadline(time.Now().Add(cn.in.cfg.HandshakeTimeout.D()))
	defer func() { _ = cn.c.SetDeadline(time.Time{}) }()
	helo := forwardproto.NewHelo(len(cn.in.users) > 0)
	if _, err := cn.c.Write(forwardproto.AppendHelo(nil, helo)); err != nil {
		return err
	}
	ping, err := dec.NextPing()
	if err == nil {
		err = forwardproto.VerifyPing(ping, helo, cn.in.cfg.SharedKey, cn.in.users)
	}
	pong := forwardproto.AppendPong(nil, helo, ping, cn.in.cfg.SelfHostname, cn.in.cfg.SharedKey, err)
	if _, werr := cn.c.Write(pong); werr != nil && err == nil {
		return werr
	}
	return err
}

// addField appends entries to dst with key: value added to every record.
func addField(dst, entries []byte, key, value string) ([]byte, error) {
	for len(entries) > 0 {
		t, rec, n, err := mpack.NextEntry(entries)
		if err != nil {
			return dst, err
		}
		cnt, hdr, _ := mpack.ReadMapHeader(rec)
		dst = append(dst, 0x92)
		dst = t.AppendMsgpack(dst)
		dst = mpack.AppendMapHeader(dst, cnt+1)
		dst = append(dst, rec[hdr:]...)
		dst = mpack.AppendString(dst, key)
		dst = mpack.AppendString(dst, value)
		entries = entries[n:]
	}
	return dst, nil
}
