// Package kafkaconn holds what the kafka input and the kafka output set up
// the same way on their franz-go clients: TLS, SASL and the client's log.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"

	"github.com/logship/logship/conftypes"
)

// TLSEnabled reports whether the client dials with TLS: any TLS setting,
// the server name included, turns it on.
func TLSEnabled(t conftypes.TLS) bool { return t.Enabled() || t.ServerName != "" }

// Security returns the client options for t (when TLSEnabled) and for a
// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, or "" for none.
func Security(t conftypes.TLS, mechanism, user, password string) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if TLSEnabled(t) {
		tc, err := ClientTLS(t)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch mechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha512Mechanism()))
	}
	return opts, nil
}

// ClientTLS is the client's TLS configuration: TLS 1.2 at least, the CA
// file's certificates as roots, a client certificate when set.
func ClientTLS(t conftypes.TLS) (*tls.Config, error) {
	//nolint:gosec // InsecureSkipVerify is the user's explicit choice.
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no PEM certificate in %s", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Logger passes the client's warnings and errors to a plugin's log.
type Logger struct{ L *zap.Logger }

// Level implements kgo.Logger.
func (z Logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

// Log implements kgo.Logger.
func (z Logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]zap.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(keyvals[i]), keyvals[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		z.L.Error("kafka client: "+msg, fields...)
	case kgo.LogLevelWarn:
		z.L.Warn("kafka client: "+msg, fields...)
	default:
		z.L.Debug("kafka client: "+msg, fields...)
	}
}
