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
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/logship/logship/pipeline"
)

// Service is one running logship process.
type Service struct {
	role string
	path string
	reg  *pipeline.Registry

	log     *zap.Logger
	level   zap.AtomicLevel
	prom    *prometheus.Registry
	metrics *pipeline.Metrics

	cfg    *conf.Config
	buf    *broker.Broker
	runner *pipeline.Runner
	ready  atomic.Bool

	httpSrv  *http.Server
	httpLn   net.Listener
	httpDone chan struct{}

	reloads  prometheus.Counter
	reloadOK prometheus.Gauge
	mu       sync.Mutex
}

// New loads and validates the config. A config error is a conf.Errors.
func New(role, path string, reg *pipeline.Registry) (*Service, error) {
	cfg, err := conf.Load(path, role, reg)
	if err != nil {
		return nil, err
	}
	s := &Service{role: role, path: path, reg: reg, cfg: cfg}
	s.level = zap.NewAtomicLevelAt(levelOf(cfg.Service.LogLevel))
	s.log = newLogger(cfg.Service.LogFormat, s.level).With(zap.String("role", role))
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
	syncMode, err := broker.ParseSyncMode(b.Sync)
	if err != nil {
		return nil, err
	}
	full, err := broker.ParseFullPolicy(b.WhenFull)
	if err != nil {
		return nil, err
	}
	return broker.Open(filepath.Join(cfg.Service.DataDir, "buffer"),
		broker.WithPartitions(b.Partitions),
		broker.WithSegmentBytes(int64(b.SegmentBytes)),
		broker.WithMaxBytes(int64(b.MaxBytes)),
		broker.WithSync(syncMode),
		broker.WithSyncInterval(b.SyncInterval.D()),
		broker.WithWhenFull(full),
		broker.WithLogger(s.log.Named("buffer")),
		broker.WithRegisterer(s.prom),
	)
}

// build creates every component of cfg.
func (s *Service) build(cfg *conf.Config) (inputs, filters, outputs []pipeline.Component, err error) {
	mk := func(list []conf.Plugin) ([]pipeline.Component, error) {
		var out []pipeline.Component
		for _, p := range list {
			set := pipeline.Settings{
				Name: p.Name, Type: p.Type, Role: s.role, DataDir: cfg.Service.DataDir,
				Logger:  s.log.With(zap.String(string(p.Kind), p.Name)),
				Metrics: s.metrics.Component(p.Kind, p.Name, p.Type),
			}
			inst, err := p.Factory.Create(set, p.Config)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", p.Kind, p.Name, err)
			}
			out = append(out, pipeline.Component{Name: p.Name, Type: p.Type, Kind: p.Kind, Matcher: p.Matcher, Instance: inst, Metrics: set.Metrics})
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

func (s *Service) startPipeline(ctx context.Context, cfg *conf.Config) (*pipeline.Runner, error) {
	in, fl, out, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	return s.startRunner(ctx, in, fl, out)
}

func (s *Service) startRunner(ctx context.Context, in, fl, out []pipeline.Component) (*pipeline.Runner, error) {
	r := pipeline.NewRunner(s.buf, s.log, in, fl, out)
	if err := r.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Run starts everything and runs until ctx is done; then it stops
// gracefully within shutdown_timeout. Each value received on reload
// reloads the config file. A nil error means a clean stop.
func (s *Service) Run(ctx context.Context, reload <-chan struct{}) error {
	defer func() { _ = s.log.Sync() }()
	if err := os.MkdirAll(s.cfg.Service.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
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
	r, err := s.startPipeline(ctx, s.cfg)
	if err != nil {
		return err
	}
	s.runner = r
	s.ready.Store(true)
	s.log.Info("logship started", zap.String("config", s.path), zap.Int("inputs", len(s.cfg.Inputs)), zap.Int("outputs", len(s.cfg.Outputs)), zap.String("data_dir", s.cfg.Service.DataDir))
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
	// Build first: a plugin that cannot be created leaves the old pipeline
	// untouched.
	in, fl, out, err := s.build(cfg)
	if err != nil {
		s.reloadOK.Set(0)
		s.log.Error("config cannot be applied; keeping the running one", zap.Error(err))
		return nil
	}
	s.level.SetLevel(levelOf(cfg.Service.LogLevel))
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Service.ShutdownTimeout.D())
	defer cancel()
	if err := s.runner.Stop(sctx); err != nil {
		s.log.Warn("old pipeline stopped with errors", zap.Error(err))
	}
	r, err := s.startRunner(sctx, in, fl, out)
	if err != nil {
		s.reloadOK.Set(0)
		s.log.Error("new pipeline failed to start; going back to the old config", zap.Error(err))
		r, err = s.startPipeline(sctx, s.cfg)
		if err != nil {
			return fmt.Errorf("restarting the old pipeline after a failed reload: %w", err)
		}
		s.runner = r
		return nil
	}
	if cfg.Service.HTTPListen != s.cfg.Service.HTTPListen {
		s.stopHTTP()
		if err := s.startHTTP(cfg.Service.HTTPListen); err != nil {
			s.log.Error("http server", zap.Error(err))
		}
	}
	s.runner, s.cfg = r, cfg
	s.reloadOK.Set(1)
	s.log.Info("config reloaded")
	return nil
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
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
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
