package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
)

// clientOpts are the options of the consumer client that do not depend on
// the input's callbacks: brokers, TLS, SASL, the group's timers and fetch
// sizes. The TLS and SASL parts mirror the kafka output's.
func clientOpts(c *Config, log *zap.Logger) ([]kgo.Opt, error) {
	start := kgo.NewOffset().AtStart()
	if c.StartOffset == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(c.ConnectTimeout.D()),
		kgo.ConsumerGroup(c.Group),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(start),
		kgo.FetchMaxBytes(int32(c.FetchMaxBytes)),
		kgo.BrokerMaxReadBytes(max(int32(c.FetchMaxBytes)+(1<<20), 100<<20)),
		kgo.SessionTimeout(c.SessionTimeout.D()),
		kgo.RebalanceTimeout(c.RebalanceTimeout.D()),
		kgo.HeartbeatInterval(c.HeartbeatInterval.D()),
		// Marked offsets are committed by the input's own loop, every
		// commit_interval (positions.go), on revoke and at stop; the
		// client's loop is a backstop.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Hour),
		kgo.BlockRebalanceOnPoll(),
		// Records of aborted transactions are never read, and records of
		// open ones wait until their transaction commits: what the kafka
		// output's exactly_once writes is read once.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.WithLogger(zapLogger{log}),
	}
	if c.TopicRegex != "" {
		opts = append(opts, kgo.ConsumeTopics(c.TopicRegex), kgo.ConsumeRegex())
	} else {
		opts = append(opts, kgo.ConsumeTopics(c.Topics...))
	}
	if c.tlsEnabled() {
		tc, err := clientTLS(c)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch c.SASL.Mechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

func clientTLS(cfg *Config) (*tls.Config, error) {
	//nolint:gosec // InsecureSkipVerify is the user's explicit choice.
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.TLS.InsecureSkipVerify, ServerName: cfg.TLS.ServerName}
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no PEM certificate in %s", cfg.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// zapLogger passes the client's warnings and errors to the input's log.
type zapLogger struct{ l *zap.Logger }

func (z zapLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (z zapLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		z.l.Error("kafka client: "+msg, fields...)
	case kgo.LogLevelWarn:
		z.l.Warn("kafka client: "+msg, fields...)
	default:
		z.l.Debug("kafka client: "+msg, fields...)
	}
}
