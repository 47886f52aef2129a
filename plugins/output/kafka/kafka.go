package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/ratelog"
	"github.com/logship/logship/internal/template"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/internal/kafkaconn"
)

// Factory registers the kafka output.
func Factory() pipeline.Factory {
	return pipeline.NewOutputFactory("kafka", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Output, error) { return New(set, cfg) })
}

// ErrStopped is what a chunk still in flight gets when the output is
// stopped: it is not delivered and stays in the buffer.
var ErrStopped = errors.New("kafka output stopped")

// ErrTopicMissing is returned by Start when the fixed topic does not exist
// and create_topic is off.
var ErrTopicMissing = errors.New("topic does not exist")

var codecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

var _ pipeline.PipelinedOutput = (*Output)(nil)

// Output is a kafka output. It implements pipeline.PipelinedOutput.
type Output struct {
	set   pipeline.Settings
	cfg   Config
	log   *zap.Logger
	rl    *ratelog.Logger
	m     *metrics
	opts  []kgo.Opt
	topic *template.Template
	fixed string // the topic when it has no variables
	key   []string

	sender [6]byte
	cl     *kgo.Client
	adm    *kadm.Client

	soloMu sync.Mutex  // one message at a time through solo
	solo   *kgo.Client // made on first use: see produceAlone

	createMu sync.Mutex
	created  map[string]bool // templated topics this output created or found

	// exactly_once: the topic holding the progress, and a worker with a
	// transactional client per buffer partition (txn.go).
	progressTopic string
	txnMu         sync.Mutex
	txnParts      map[int]*txnPart
	afterCommit   func(partition int) // tests: called after each transaction committed, before its batches are done

	// ctx lives until Stop: retries wait under it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.RWMutex
	stopped bool
	wg      sync.WaitGroup // retry goroutines

	jobs sync.Pool // *job
}

// New builds the output; the client connects in Start.
func New(set pipeline.Settings, cfg *Config) (*Output, error) {
	if set.Logger == nil {
		set.Logger = zap.NewNop()
	}
	if set.Metrics == nil {
		set.Metrics = pipeline.NopMetrics(pipeline.KindOutput, set.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &Output{set: set, cfg: *cfg, log: set.Logger, rl: ratelog.New(set.Logger, time.Minute), created: map[string]bool{}, txnParts: map[int]*txnPart{}}
	o.topic = template.MustParse(cfg.Topic) // Validate parsed it
	if s, ok := o.topic.Static(); ok {
		o.fixed = s
	}
	if cfg.ExactlyOnce {
		o.progressTopic = cfg.ProgressTopic
		if o.progressTopic == "" {
			o.progressTopic = o.fixed // Validate requires one of them
		}
	}
	if cfg.Key != "" {
		o.key, _ = template.ParseField(cfg.Key)
	}
	o.m = newMetrics(set)
	opts, err := o.clientOpts()
	if err != nil {
		return nil, err
	}
	o.opts = opts
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.jobs.New = func() any { j := &job{o: o}; j.promiseFn = j.promise; return j }
	return o, nil
}

func (o *Output) clientOpts() ([]kgo.Opt, error) {
	c := &o.cfg
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // murmur2 for keys, as the Java client
		kgo.ProducerBatchCompression(codecs[c.Compression]),
		kgo.ProducerLinger(c.Linger.D()),
		kgo.ProducerBatchMaxBytes(int32(c.BatchBytes)),
		// No kgo.RecordDeliveryTimeout: the client measures it from the
		// record's timestamp, which is the event time here. Each round of
		// a chunk is produced under a context of delivery_timeout instead.
		kgo.DialTimeout(c.ConnectTimeout.D()),
		// The pipeline bounds what is in flight (max_in_flight chunks per
		// buffer partition); the client must not block below that.
		kgo.MaxBufferedRecords(1 << 24),
		kgo.WithLogger(kafkaconn.Logger{L: o.log}),
		kgo.WithHooks(o.m),
	}
	switch c.Acks {
	case "all":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	}
	sec, err := kafkaconn.Security(c.TLS, c.SASL.Mechanism, c.SASL.Username, c.SASL.Password)
	if err != nil {
		return nil, err
	}
	return append(opts, sec...), nil
}

// Start loads the sender id, makes the client and checks that a fixed
// topic exists (creating it with create_topic). A topic that does not
// exist is an error; brokers that cannot be reached are not (the events
// wait in the buffer), only a warning.
func (o *Output) Start(ctx context.Context) error {
	id, err := loadSenderID(o.set.DataDir, o.set.Name, o.log)
	if err != nil {
		return fmt.Errorf("kafka output %s: sender id: %w", o.set.Name, err)
	}
	o.sender = id
	cl, err := kgo.NewClient(o.opts...)
	if err != nil {
		return fmt.Errorf("kafka output %s: %w", o.set.Name, err)
	}
	o.cl = cl
	o.adm = kadm.NewClient(cl)
	if o.fixed != "" {
		if err := o.checkTopic(ctx, o.fixed); err != nil {
			cl.Close()
			o.cl = nil
			return fmt.Errorf("kafka output %s: %w", o.set.Name, err)
		}
	}
	if o.progressTopic != "" && o.progressTopic != o.fixed {
		if err := o.checkTopic(ctx, o.progressTopic); err != nil {
			cl.Close()
			o.cl = nil
			return fmt.Errorf("kafka output %s: progress_topic: %w", o.set.Name, err)
		}
	}
	o.log.Info("kafka output ready", zap.Strings("brokers", o.cfg.Brokers), zap.String("topic", o.cfg.Topic),
		zap.String("acks", o.cfg.Acks), zap.String("compression", o.cfg.Compression), zap.String("format", o.cfg.Format),
		zap.String("sender_id", fmt.Sprintf("%x", id[:])), zap.Bool("tls", kafkaconn.TLSEnabled(o.cfg.TLS)), zap.String("sasl", o.cfg.SASL.Mechanism),
		zap.Bool("exactly_once", o.cfg.ExactlyOnce))
	return nil
}

// checkTopic looks the fixed topic up and creates it when it is missing and
// create_topic asks for it.
func (o *Output) checkTopic(ctx context.Context, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.ConnectTimeout.D())
	defer cancel()
	td, err := o.adm.ListTopics(ctx, topic)
	if err != nil {
		o.log.Warn("cannot reach the Kafka brokers to check the topic; events wait in the buffer until they can be delivered",
			zap.String("topic", topic), zap.Strings("brokers", o.cfg.Brokers), zap.Error(err))
		return nil
	}
	d, ok := td[topic]
	switch {
	case ok && d.Err == nil:
		return nil
	case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
		if o.cfg.CreateTopic.Partitions == 0 {
			return fmt.Errorf("topic %q: %w on brokers %v: create it, or set create_topic.partitions to let logship create it", topic, ErrTopicMissing, o.cfg.Brokers)
		}
		return o.createTopic(ctx, topic)
	default:
		o.log.Warn("cannot check the topic; events wait in the buffer until they can be delivered", zap.String("topic", topic), zap.Error(d.Err))
		return nil
	}
}

// createTopic creates topic with create_topic's settings; a topic that
// exists already is fine.
func (o *Output) createTopic(ctx context.Context, topic string) error {
	ct := o.cfg.CreateTopic
	resp, err := o.adm.CreateTopic(ctx, int32(ct.Partitions), int16(ct.ReplicationFactor), nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %q (partitions %d, replication factor %d): %w", topic, ct.Partitions, ct.ReplicationFactor, err)
	}
	if err == nil {
		o.log.Info("created topic", zap.String("topic", topic), zap.Int("partitions", ct.Partitions), zap.Int("replication_factor", ct.ReplicationFactor))
	}
	return nil
}

// SenderID is the id every event_id of this output starts with.
func (o *Output) SenderID() [6]byte { return o.sender }

// MaxInFlight implements pipeline.PipelinedOutput.
func (o *Output) MaxInFlight() int { return o.cfg.MaxInFlight }

// Write delivers b and waits for the outcome; the runner uses WriteAsync.
func (o *Output) Write(ctx context.Context, b pipeline.Batch) error {
	ch := make(chan error, 1)
	o.WriteAsync(ctx, b, func(err error) { ch <- err })
	return <-ch
}

// WriteAsync implements pipeline.PipelinedOutput: it produces one message
// per event of b and calls done(nil) once Kafka acknowledged every one of
// them (as acks asks), or dropped and counted those it refused for good.
// Messages the client gave up on (delivery_timeout) are produced again
// after a backoff until ctx ends (done(ctx.Err())) or the output stops
// (done(ErrStopped)): the batch then stays in the buffer. A batch whose
// entries are not valid msgpack gets a Permanent error. With exactly_once,
// done(nil) comes once the transaction holding b's messages and progress
// committed, or at once for a batch a committed transaction covers (see
// the package doc).
func (o *Output) WriteAsync(ctx context.Context, b pipeline.Batch, done func(error)) {
	o.mu.RLock()
	stopped := o.stopped || o.cl == nil
	o.mu.RUnlock()
	if stopped {
		done(ErrStopped)
		return
	}
	j := o.jobs.Get().(*job)
	if err := j.build(ctx, b, done); err != nil {
		j.release()
		done(pipeline.Permanent(err))
		return
	}
	if len(j.recs) == 0 { // every event dropped while encoding
		j.release()
		done(nil)
		return
	}
	if o.cfg.ExactlyOnce {
		o.txnWrite(j)
		return
	}
	j.start = time.Now()
	j.round(len(j.recs))
	for i := range j.recs {
		o.cl.Produce(j.rctx, &j.recs[i], j.promiseFn)
	}
}

// Stop waits for what the client still holds until ctx ends, then closes
// it; messages not acknowledged by then stay in the buffer.
func (o *Output) Stop(ctx context.Context) error {
	o.mu.Lock()
	if o.stopped {
		o.mu.Unlock()
		return nil
	}
	o.stopped = true
	o.mu.Unlock()
	var err error
	if o.cl != nil {
		if ferr := o.cl.Flush(ctx); ferr != nil {
			err = fmt.Errorf("kafka output %s: messages still unacknowledged at stop stay in the buffer: %w", o.set.Name, ferr)
		}
	}
	o.cancel()
	if o.cl != nil {
		o.cl.Close()
	}
	o.wg.Wait()
	o.stopTxn()
	o.soloMu.Lock()
	if o.solo != nil {
		o.solo.Close()
		o.solo = nil
	}
	o.soloMu.Unlock()
	return err
}

// goRetry runs j.retry on a goroutine, unless the output is stopping.
func (o *Output) goRetry(j *job) {
	o.mu.RLock()
	if o.stopped {
		o.mu.RUnlock()
		j.end(ErrStopped)
		return
	}
	o.wg.Add(1)
	o.mu.RUnlock()
	go func() {
		defer o.wg.Done()
		j.retry()
	}()
}

// produceAlone sends r as the only message of its batch, through a client
// of its own, and waits for Kafka's answer. A broker refuses a whole batch
// with MESSAGE_TOO_LARGE when it exceeds the topic's max.message.bytes; a
// message that fails so in a batch with others is tried alone, and only
// dropped when it is too large by itself.
func (o *Output) produceAlone(ctx context.Context, r *kgo.Record) error {
	o.soloMu.Lock()
	defer o.soloMu.Unlock()
	if o.solo == nil {
		o.mu.RLock()
		stopped := o.stopped
		o.mu.RUnlock()
		if stopped {
			return ErrStopped
		}
		opts := append(append([]kgo.Opt{}, o.opts...), kgo.ProducerLinger(0))
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return err
		}
		o.solo = cl
	}
	r.Context = nil // kgo keeps the context of the last Produce call here
	return o.solo.ProduceSync(ctx, r).FirstErr()
}

// ensureTopic creates a templated topic that Kafka said does not exist,
// when create_topic is on; it reports whether the topic may exist now.
func (o *Output) ensureTopic(ctx context.Context, topic string) bool {
	if o.cfg.CreateTopic.Partitions == 0 || !validTopic(topic) {
		return false
	}
	o.createMu.Lock()
	defer o.createMu.Unlock()
	if o.created[topic] {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.ConnectTimeout.D())
	defer cancel()
	if err := o.createTopic(ctx, topic); err != nil {
		o.rl.Warn("create_topic", "cannot create a topic; its events wait in the buffer", zap.String("topic", topic), zap.Error(err))
		return false
	}
	if len(o.created) > 10000 {
		clear(o.created)
	}
	o.created[topic] = true
	return true
}

// dropReason says whether err means Kafka refuses the message for good,
// and under which dropped_records_total reason it is counted.
func dropReason(err error) (string, bool) {
	switch {
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return "too_large", true
	case errors.Is(err, kerr.InvalidRecord):
		return "invalid_record", true
	case errors.Is(err, kerr.InvalidTopicException):
		return "invalid_topic", true
	case errors.Is(err, kerr.InvalidTimestamp):
		return "invalid_timestamp", true
	case errors.Is(err, kerr.InvalidRequiredAcks), errors.Is(err, kerr.UnsupportedCompressionType):
		return "", false // the config's fault: the messages wait in the buffer
	}
	return "", false
}

// errReason is the errors_total reason of a produce error: Kafka's error
// name, or a short class for client-side errors.
func errReason(err error) string {
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		return ke.Message
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case errors.Is(err, kgo.ErrRecordTimeout):
		return "delivery_timeout"
	case errors.Is(err, kgo.ErrClientClosed):
		return "client_closed"
	}
	return "client"
}
