// Package kafkaconn holds what the kafka input and the kafka output set up
// the same way on their franz-go clients: TLS, SASL and the client's log.
package kafkaconn

import (
	"fmt"

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
		tc, err := t.ClientConfig()
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
