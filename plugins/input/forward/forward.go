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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
)

// Factory registers the forward input.
func Factory() pipeline.Factory {
	return pipeline.Factory{
		Type:      "forward",
		Kind:      pipeline.KindInput,
		NewConfig: func() pipeline.Config { return defaultConfig() },
		Create: func(set pipeline.Settings, cfg pipeline.Config) (any, error) {
			return New(set, cfg.(*Config))
		},
	}
}

var (
	connsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "logship", Subsystem: "forward_in", Name: "connections", Help: "Open forward connections."}, []string{"component"})
	connsSeen = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "connections_total", Help: "Forward connections accepted."}, []string{"component"})
	acksSent  = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "acks_total", Help: "Chunk acknowledgements sent."}, []string{"component"})
	dupChunks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "logship", Subsystem: "forward_in", Name: "duplicate_chunks_total", Help: "Chunks acknowledged again without being stored (resent ids)."}, []string{"component"})
	ackWait   = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "logship", Subsystem: "forward_in", Name: "ack_latency_seconds", Help: "From a chunk's arrival to its ack.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"component"})
)

// Input is a running forward listener.
type Input struct {
	set pipeline.Settings
	cfg *Config
	log *zap.Logger

	tlsConf *tls.Config
	users   map[string]string
	dedup   *dedup

	ln     net.Listener
	udp    net.PacketConn
	ctx    context.Context // ends when Stop begins
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[*conn]struct{}

	open             prometheus.Gauge
	seen, acks, dups prometheus.Counter
	ackLatency       prometheus.Observer
}

// New builds the input; Start listens.
func New(set pipeline.Settings, cfg *Config) (*Input, error) {
	in := &Input{set: set, cfg: cfg, log: set.Logger, conns: map[*conn]struct{}{}}
	if cfg.SelfHostname == "" {
		host, _ := os.Hostname()
		c := *cfg
		c.SelfHostname = host
		in.cfg = &c
	}
	if in.log == nil {
		in.log = zap.NewNop()
	}
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
	reg := set.Metrics.Registerer
	l := prometheus.Labels{"component": set.Name}
	in.open = pipeline.RegisterOnce(reg, connsOpen).With(l)
	in.seen = pipeline.RegisterOnce(reg, connsSeen).With(l)
	in.acks = pipeline.RegisterOnce(reg, acksSent).With(l)
	in.dups = pipeline.RegisterOnce(reg, dupChunks).With(l)
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

// Start listens on TCP (and UDP for heartbeats) and accepts connections.
func (in *Input) Start(_ context.Context, emit pipeline.Emitter) error {
	if in.cfg.Dedup {
		dir := ""
		if in.set.DataDir != "" {
			dir = filepath.Join(in.set.DataDir, "input", in.set.Name)
		}
		d, err := openDedup(dir, in.cfg.DedupWindow)
		if err != nil {
			return fmt.Errorf("dedup window: %w", err)
		}
		in.dedup = d
	}
	ln, err := net.Listen("tcp", in.cfg.Listen)
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
	in.wg.Add(1)
	go in.accept(emit)
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
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				in.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("in", delay))
				time.Sleep(delay)
				continue
			}
			in.log.Error("accept failed", zap.Error(err))
			return
		}
		delay = 0
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

// Stop stops accepting, stops reading every connection, waits until the
// acknowledgement of every chunk already read is sent (or ctx is done) and
// closes the connections.
func (in *Input) Stop(ctx context.Context) error {
	if in.cancel == nil {
		return nil
	}
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
// durable.
type conn struct {
	in    *Input
	c     net.Conn
	peer  string
	ip    string
	acks  chan ackJob
	slots chan struct{} // pending acks; full means stop reading
}

type ackJob struct {
	chunk   []byte
	err     error
	arrived time.Time
	fresh   bool // the chunk was stored (not a duplicate): record its id
	json    bool // answer in JSON
}

func newConn(in *Input, c net.Conn) *conn {
	peer := c.RemoteAddr().String()
	ip, _, _ := net.SplitHostPort(peer)
	return &conn{in: in, c: c, peer: peer, ip: ip,
		acks: make(chan ackJob, in.cfg.MaxPendingAcks+1), slots: make(chan struct{}, in.cfg.MaxPendingAcks)}
}

func (cn *conn) stopReading() { _ = cn.c.SetReadDeadline(time.Now()) }

func (cn *conn) serve(emit pipeline.Emitter) {
	log := cn.in.log.With(zap.String("peer", cn.peer))
	m := cn.in.set.Metrics
	writerDone := make(chan struct{})
	go cn.writer(writerDone)
	defer func() {
		// Wait for every pending ack before closing.
		for range cap(cn.slots) {
			cn.slots <- struct{}{}
		}
		close(cn.acks)
		<-writerDone
		cn.c.Close()
	}()

	dec := forwardproto.NewDecoder(cn.c, forwardproto.Limits{MaxFrameBytes: int(cn.in.cfg.MaxFrameBytes), MaxDecompressedBytes: int(cn.in.cfg.MaxDecompressedBytes)})
	if cn.in.cfg.SharedKey != "" {
		if err := cn.handshake(dec); err != nil {
			m.Error("auth")
			log.Warn("forward handshake refused", zap.Error(err))
			return
		}
	}
	var rec []byte
	for {
		req, err := dec.Next()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF), cn.in.ctx.Err() != nil:
			case errors.Is(err, forwardproto.ErrFrameTooLarge):
				m.Error("frame_too_large")
				log.Error("request larger than max_frame_bytes refused; the client will resend it forever unless its chunks get smaller", zap.Error(err), zap.Int64("max_frame_bytes", int64(cn.in.cfg.MaxFrameBytes)))
			case errors.Is(err, forwardproto.ErrDecompressedTooLarge):
				m.Error("decompressed_too_large")
				log.Error("compressed request inflates beyond max_decompressed_bytes; connection closed", zap.Error(err))
			case errors.Is(err, forwardproto.ErrMalformed):
				m.Error("malformed_frame")
				log.Warn("malformed request; connection closed", zap.Error(err))
			default:
				var ne net.Error
				if !errors.As(err, &ne) {
					m.Error("read")
					log.Warn("connection error", zap.Error(err))
				}
			}
			return
		}
		isJSON := req.JSON
		if req.Dropped > 0 {
			m.Dropped("invalid_event", req.Dropped)
		}
		arrived := time.Now()
		var chunkID []byte
		if req.HasChunk {
			chunkID = append([]byte(nil), req.Chunk...)
		}
		// One slot per request that waits for an answer or the buffer.
		select {
		case cn.slots <- struct{}{}:
		case <-cn.in.ctx.Done():
			return
		}
		if chunkID != nil && cn.in.dedup != nil {
			if !cn.in.dedup.begin(chunkID, func(err error) {
				cn.in.dups.Inc()
				cn.acks <- ackJob{chunk: chunkID, err: err, arrived: arrived, json: isJSON}
			}) {
				continue
			}
		}
		if req.Count == 0 {
			cn.acks <- ackJob{chunk: chunkID, arrived: arrived, fresh: true, json: isJSON}
			continue
		}
		entries := req.Entries
		if cn.in.cfg.SourceAddressKey != "" {
			rec, err = addField(rec[:0], entries, cn.in.cfg.SourceAddressKey, cn.ip)
			if err != nil {
				m.Error("malformed_frame")
				log.Warn("malformed entries; connection closed", zap.Error(err))
				cn.acks <- ackJob{chunk: chunkID, err: err, arrived: arrived}
				return
			}
			entries = rec
		}
		err = emit.Emit(cn.in.ctx, pipeline.Chunk{Tag: req.Tag, Entries: entries, Count: req.Count}, func(err error) {
			cn.acks <- ackJob{chunk: chunkID, err: err, arrived: arrived, fresh: true, json: isJSON}
		})
		if err != nil {
			// Stopping: the chunk was not taken; no ack, the client resends.
			cn.acks <- ackJob{chunk: chunkID, err: err, arrived: arrived, fresh: true}
			return
		}
	}
}

// writer sends acks in the order chunks become durable; it runs until the
// reader closed acks, so a chunk stored after its client went away still
// has its id recorded.
func (cn *conn) writer(done chan<- struct{}) {
	defer close(done)
	var out []byte
	broken := false
	for j := range cn.acks {
		if j.fresh && j.chunk != nil && cn.in.dedup != nil {
			cn.in.dedup.finish(j.chunk, j.err)
		}
		if j.err != nil {
			if !errors.Is(j.err, context.Canceled) {
				cn.in.set.Metrics.Error("not_stored")
				cn.in.log.Warn("chunk not stored; not acknowledged, the client will resend", zap.String("peer", cn.peer), zap.Error(j.err))
			}
		} else if j.chunk != nil && !broken {
			out = forwardproto.AppendAck(out[:0], j.chunk, j.json)
			_ = cn.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := cn.c.Write(out); err != nil {
				broken = true
				cn.c.Close() // the reader notices and ends
			} else {
				cn.in.acks.Inc()
				cn.in.ackLatency.Observe(time.Since(j.arrived).Seconds())
			}
		}
		<-cn.slots
	}
}

func (cn *conn) handshake(dec *forwardproto.Decoder) error {
	_ = cn.c.SetDeadline(time.Now().Add(30 * time.Second))
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
		t, rec, n, err := pipeline.NextEntry(entries)
		if err != nil {
			return dst, err
		}
		cnt, hdr, _ := pipeline.ReadMapHeader(rec)
		dst = append(dst, 0x92)
		dst = t.AppendMsgpack(dst)
		dst = pipeline.AppendMapHeader(dst, cnt+1)
		dst = append(dst, rec[hdr:]...)
		dst = pipeline.AppendString(dst, key)
		dst = pipeline.AppendString(dst, value)
		entries = entries[n:]
	}
	return dst, nil
}
