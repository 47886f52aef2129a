package kafka

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/logship/logship/plugins/internal/kafkaconn"
)

// clientOpts are the options of the consumer client that do not depend on
// the input's callbacks: brokers, TLS, SASL, the group's timers and fetch
// sizes. TLS, SASL and the client's log are set up as the kafka output's
// (plugins/internal/kafkaconn).
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
		kgo.WithLogger(kafkaconn.Logger{L: log}),
	}
	if c.TopicRegex != "" {
		opts = append(opts, kgo.ConsumeTopics(c.TopicRegex), kgo.ConsumeRegex())
	} else {
		opts = append(opts, kgo.ConsumeTopics(c.Topics...))
	}
	sec, err := kafkaconn.Security(c.TLS, c.SASL.Mechanism, c.SASL.Username, c.SASL.Password)
	if err != nil {
		return nil, err
	}
	return append(opts, sec...), nil
}
