// Package service runs one logship process: it loads the config, opens the
// buffer, builds and runs the pipeline, serves /metrics, /healthz and
// /readyz, reloads on demand and stops gracefully. The agent and aggregator
// roles both run through it; reload goes through the same code path as
// start-up.
package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

// Service is one running logship process.
type Service struct {
	role conf.Role
	path string
	reg  *pipeline.Registry

	log     *zap.Logger
	level   zap.AtomicLevel
	prom    *prometheus.Registry
	metrics *pipeline.Metrics

	cfg    *conf.Config
	buf    *broker.Broker
	runner *pipeline.Runner
	comps  map[string]built // the running components by kind/name
	ready  atomic.Bool

	httpSrv  *http.Server
	httpLn   net.Listener
	httpDone chan struct{}

	reloads  prometheus.Counter
	reloadOK prometheus.Gauge
	mu       sync.Mutex
}

// New loads and validates the config. A config error is a conf.Errors.
func New(role conf.Role, path string, reg *pipeline.Registry) (*Service, error) {
	cfg, err := conf.Load(path, role, reg)
	if err != nil {
		return nil, err
	}
	s := &Service{role: role, path: path, reg: reg, cfg: cfg}
	s.level = zap.NewAtomicLevelAt(levelOf(cfg.Service.LogLevel))
	s.log = newLogger(cfg.Service.LogFormat, s.level).With(zap.String("role", role.Name))
	s.prom = prometheus.NewRegistry()
	s.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = pipeline.NewMetrics(s.prom)
	s.reloads = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "logship", Name: "config_reloads_total", Help: "Config reloads attempted."})
	s.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "logship", Name: "config_last_reload_successful", Help: "1 if the last reload succeeded."})
	s.prom.MustRegister(s.reloads, s.reloadOK)
	s.reloadOK.Set(1)
	return s, nil
}

// Logger is the service's logger.
func (s *Service) Logger() *zap.Logger { return s.log }

func levelOf(s string) zapcore.Level {
	l, err := zapcore.ParseLevel(s)
	if err != nil {
		return zapcore.InfoLevel
	}
	return l
}

func newLogger(format string, level zap.AtomicLevel) *zap.Logger {
	var zc zap.Config
	if format == "json" {
		zc = zap.NewProductionConfig()
	} else {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	zc.Level = level
	zc.Sampling = &zap.SamplingConfig{Initial: 100, Thereafter: 100}
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	l, err := zc.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}

func (s *Service) openBuffer(cfg *conf.Config) (*broker.Broker, error) {
	b := cfg.Buffer
	return broker.Open(filepath.Join(cfg.Service.DataDir, "buffer"),
		broker.WithPartitions(b.Partitions),
		broker.WithSegmentBytes(int64(b.SegmentBytes)),
		broker.WithMaxBytes(int64(b.MaxBytes)),
		broker.WithSync(b.Sync),
		broker.WithSyncInterval(b.SyncInterval.D()),
		broker.WithWhenFull(b.WhenFull),
		broker.WithSegmentReuse(b.ReuseSegments),
		broker.WithLogger(s.log.Named("buffer")),
		broker.WithRegisterer(s.prom),
	)
}

// built is one component and the config it was created from.
type built struct {
	plugin conf.Plugin
	comp   pipeline.Component
}

func compKey(kind pipeline.Kind, name string) string { return string(kind) + "/" + name }

// unchanged says whether a running component can serve the new config
// block as it is.
func unchanged(old, p conf.Plugin) bool {
	return old.Type == p.Type && old.Match == p.Match && old.Ack == p.Ack && reflect.DeepEqual(old.Config, p.Config)
}

// build creates the components of cfg. A component in reuse whose config
// block is unchanged is taken as it is (its instance keeps running across a
// reload); the others are created.
func (s *Service) build(cfg *conf.Config, reuse map[string]built) (inputs, filters, outputs []pipeline.Component, comps map[string]built, err error) {
	comps = map[string]built{}
	mk := func(list []conf.Plugin) ([]pipeline.Component, error) {
		var out []pipeline.Component
		for _, p := range list {
			key := compKey(p.Kind, p.Name)
			if old, ok := reuse[key]; ok && unchanged(old.plugin, p) {
				comps[key] = old
				out = append(out, old.comp)
				continue
			}
			set := pipeline.Settings{
				Name: p.Name, Type: p.Type, Role: s.role.Name, DataDir: cfg.Service.DataDir, NodeName: cfg.Service.NodeName,
				Logger:  s.log.With(zap.String(string(p.Kind), p.Name)),
				Metrics: s.metrics.Component(p.Kind, p.Name, p.Type),
			}
			inst, err := p.Factory.Create(set, p.Config)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", p.Kind, p.Name, err)
			}
			c := pipeline.Component{Name: p.Name, Type: p.Type, Kind: p.Kind, Matcher: p.Matcher, Ack: p.Ack, Instance: inst, Metrics: set.Metrics}
			comps[key] = built{plugin: p, comp: c}
			out = append(out, c)
		}
		return out, nil
	}
	if inputs, err = mk(cfg.Inputs); err != nil {
		return
	}
	if filters, err = mk(cfg.Filters); err != nil {
		return
	}
	outputs, err = mk(cfg.Outputs)
	return
}

// Run starts everything and runs until ctx is done; then it stops
// gracefully within shutdown_timeout. Each value received on reload
// reloads the config file. A nil error means a clean stop.
func (s *Service) Run(ctx context.Context, reload <-chan struct{}) error {
	defer func() { _ = s.log.Sync() }()
	if err := os.MkdirAll(s.cfg.Service.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	s.applyMemoryLimit(s.cfg.Service.MemoryLimit)
	if err := s.startHTTP(s.cfg.Service.HTTPListen); err != nil {
		return err
	}
	defer s.stopHTTP()
	buf, err := s.openBuffer(s.cfg)
	if err != nil {
		return fmt.Errorf("open buffer: %w", err)
	}
	s.buf = buf
	defer func() {
		if err := s.buf.Close(); err != nil {
			s.log.Error("closing the buffer", zap.Error(err))
		}
	}()
	in, fl, out, comps, err := s.build(s.cfg, nil)
	if err != nil {
		return err
	}
	r := pipeline.NewRunner(s.buf, s.log, in, fl, out)
	if err := r.Start(ctx); err != nil {
		return err
	}
	s.runner, s.comps = r, comps
	s.ready.Store(true)
	for _, p := range s.cfg.Inputs {
		if p.Default {
			s.log.Info("the config lists no inputs: running the role's default input", zap.String("input", p.Name), zap.String("type", p.Type))
		}
	}
	s.log.Info("logship started", zap.String("config", s.path), zap.Int("inputs", len(s.cfg.Inputs)), zap.Int("outputs", len(s.cfg.Outputs)), zap.String("data_dir", s.cfg.Service.DataDir), zap.String("node_name", s.cfg.Service.NodeName))
	for {
		select {
		case <-ctx.Done():
			s.log.Info("stopping", zap.Duration("shutdown_timeout", s.cfg.Service.ShutdownTimeout.D()))
			s.ready.Store(false)
			sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Service.ShutdownTimeout.D())
			err := s.runner.Stop(sctx)
			cancel()
			if err != nil {
				s.log.Warn("stopped with errors", zap.Error(err))
			} else {
				s.log.Info("stopped cleanly")
			}
			return nil
		case <-reload:
			if err := s.Reload(); err != nil {
				return err
			}
		}
	}
}

// Reload reads the config file again. An invalid config is logged and the
// running pipeline keeps going. Only an error from which the service
// cannot recover is returned.
func (s *Service) Reload() error {
	s.reloads.Inc()
	s.log.Info("reloading the config", zap.String("config", s.path))
	cfg, err := conf.Load(s.path, s.role, s.reg)
	if err != nil {
		s.reloadOK.Set(0)
		var ce conf.Errors
		if errors.As(err, &ce) {
			for _, e := range ce {
				s.log.Error("invalid config; keeping the running one", zap.String("error", e.Error()))
			}
		} else {
			s.log.Error("invalid config; keeping the running one", zap.Error(err))
		}
		return nil
	}
	if cfg.Buffer != s.cfg.Buffer || cfg.Service.DataDir != s.cfg.Service.DataDir {
		s.log.Warn("buffer settings and data_dir change only on restart; keeping the current ones")
		cfg.Buffer, cfg.Service.DataDir = s.cfg.Buffer, s.cfg.Service.DataDir
	}
	// Build first: a plugin that cannot be created leaves the running
	// pipeline untouched. Unchanged components are reused as they run.
	in, fl, out, comps, err := s.build(cfg, s.comps)
	if err != nil {
		s.reloadOK.Set(0)
		s.log.Error("config cannot be applied; keeping the running one", zap.Error(err))
		return nil
	}
	s.level.SetLevel(levelOf(cfg.Service.LogLevel))
	if cfg.Service.MemoryLimit != s.cfg.Service.MemoryLimit {
		s.applyMemoryLimit(cfg.Service.MemoryLimit)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Service.ShutdownTimeout.D())
	defer cancel()
	if err := s.runner.Update(sctx, in, fl, out); err != nil {
		s.reloadOK.Set(0)
		s.log.Error("new config failed to apply; going back to the old config", zap.Error(err))
		// The components the new config kept still run; the old ones that
		// were replaced are created again.
		still := map[string]built{}
		for k, b := range s.comps {
			if nb, ok := comps[k]; ok && nb.comp.Instance == b.comp.Instance {
				still[k] = b
			}
		}
		in, fl, out, old, err := s.build(s.cfg, still)
		if err == nil {
			err = s.runner.Update(sctx, in, fl, out)
		}
		if err != nil {
			return fmt.Errorf("restarting the old pipeline after a failed reload: %w", err)
		}
		s.comps = old
		return nil
	}
	s.reopenKept(comps)
	if cfg.Service.HTTPListen != s.cfg.Service.HTTPListen {
		s.stopHTTP()
		if err := s.startHTTP(cfg.Service.HTTPListen); err != nil {
			s.log.Error("http server", zap.Error(err))
		}
	}
	s.cfg, s.comps = cfg, comps
	s.reloadOK.Set(1)
	s.log.Info("config reloaded")
	return nil
}

// memoryLimit is the Go runtime's soft memory limit for service.memory_limit
// (0: none), and whether it applies: the GOMEMLIMIT environment variable,
// when set, takes precedence.
func memoryLimit(limit conftypes.Size, env string) (int64, bool) {
	if env != "" {
		return 0, false
	}
	if limit <= 0 {
		return math.MaxInt64, true // the runtime's "no limit"
	}
	return int64(limit), true
}

// applyMemoryLimit sets the Go runtime's soft memory limit from
// service.memory_limit, unless GOMEMLIMIT is set.
func (s *Service) applyMemoryLimit(limit conftypes.Size) {
	env := os.Getenv("GOMEMLIMIT")
	n, ok := memoryLimit(limit, env)
	if !ok {
		if limit > 0 {
			s.log.Info("GOMEMLIMIT is set: it takes precedence over service.memory_limit", zap.String("GOMEMLIMIT", env), zap.Stringer("memory_limit", limit))
		}
		return
	}
	debug.SetMemoryLimit(n)
	if limit > 0 {
		s.log.Info("Go runtime memory limit", zap.Stringer("memory_limit", limit))
	}
}

// reopenKept calls Reopen on every output that kept running through a
// reload (a new one has just opened its files), so that the file output
// lets go of a file logrotate renamed away.
func (s *Service) reopenKept(comps map[string]built) {
	for k, b := range comps {
		old, ok := s.comps[k]
		if !ok || old.comp.Instance != b.comp.Instance {
			continue
		}
		if r, ok := b.comp.Output.(pipeline.Reopener); ok {
			if err := r.Reopen(); err != nil {
				s.log.Error("reopening an output's files", zap.String("output", b.comp.Name), zap.Error(err))
			}
		}
	}
}

// readiness is nil when the service takes data: started, every input
// ready, and the buffer able to store appends.
func (s *Service) readiness() error {
	if !s.ready.Load() {
		return errors.New("starting or stopping")
	}
	if err := s.buf.Healthy(); err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	return s.runner.Ready()
}

func (s *Service) startHTTP(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("service.http_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.prom, promhttp.HandlerOpts{Registry: s.prom}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.readiness(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", zap.Error(err))
		}
	}()
	s.mu.Lock()
	s.httpSrv, s.httpLn, s.httpDone = srv, ln, done
	s.mu.Unlock()
	s.log.Info("http server listening", zap.String("addr", ln.Addr().String()))
	return nil
}

func (s *Service) stopHTTP() {
	s.mu.Lock()
	srv, done := s.httpSrv, s.httpDone
	s.httpSrv, s.httpLn = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	<-done
}
