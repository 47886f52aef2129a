package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"go.uber.org/zap"
)

// Chunk is the unit of buffering, acknowledgement and shipping: one tag and
// a run of msgpack-encoded [time, record] entries, exactly the payload of a
// Fluentd PackedForward request, with the number of entries in it.
type Chunk struct {
	Tag     string
	Entries []byte
	Count   int
	// Source, set by an input that can resume from it, is where in its
	// source the chunk ends (at most 1 KiB, opaque to the pipeline). It is
	// stored in the same buffer record as the chunk's last events and
	// found again through Positions: see there. Filters keep it.
	Source []byte
	// Own, when set, is the memory Entries lie in, from the buffer's pool
	// (broker.GetBuffer), handed over with the chunk (the forward input
	// reads a request into it): once Emit returns nil it is the
	// pipeline's, which keeps it for the outputs reading right behind the
	// buffer's writer instead of copying the entries (see
	// broker.AppendAsyncOwned), and the caller must use neither it nor
	// Entries any more. If Emit returns an error it is still the caller's.
	// Filters see no Own.
	Own *[]byte
}

// Batch is a chunk read back from the buffer for an output: its epoch,
// partition and offset identify it for good (the forward output derives its
// chunk id from them, so a resend after a crash carries the same id, and
// other bytes stored at a reused offset get another).
type Batch struct {
	Chunk
	Partition int
	Offset    uint64
	Epoch     uint64
	// Held is the bytes of memory the batch keeps until the output is
	// done with it (the buffer's pooled read memory behind Entries: at
	// least len(Entries), up to about twice), for outputs that bound what
	// they hold (the forward output's max_in_flight_bytes).
	Held int
}

// AckFunc learns the fate of an emitted chunk. Errors are classified the
// same way on both sides of the buffer (outputs: see Output.Write):
//   - nil: the chunk is durable in the buffer (or was dropped on purpose by
//     a filter, or an event of it that can never be stored was dropped and
//     counted): the input acknowledges it to its source. For an input with
//     ack: downstream (Component.Ack), nil comes later: once every output
//     matching the chunk's tag has also delivered it (AckDownstream).
//   - a Permanent error: the chunk can never be stored (a filter refused it
//     for good). The input drops it, counts it as
//     dropped_records_total{reason="permanent_error"}, and acknowledges it
//     (moves its checkpoint) so that its source does not resend it forever.
//   - any other error: not stored this time. The input must not
//     acknowledge it; the source resends it (forward) or it is read again
//     (tail).
type AckFunc func(err error)

// Emitter is how an input hands chunks to the pipeline.
type Emitter interface {
	// Emit runs the matching filters on c and appends the result to the
	// buffer. It blocks while the buffer cannot take more (backpressure)
	// until ctx is done, and then returns ctx's error; ack is not called in
	// that case, nor for any other error Emit returns (classified as for
	// AckFunc). When Emit returns nil the pipeline has copied c: the
	// caller may reuse c.Entries at once, and ack is called exactly once,
	// maybe before Emit returns, maybe from another goroutine. ack must not
	// block: it runs on the buffer's sync goroutine (under ack: downstream,
	// on an output's).
	//
	// A chunk larger than one buffer record is stored in pieces and acked
	// once all are durable; an event that can never be stored (larger than
	// a record on its own, or a tag longer than the buffer keeps) is
	// dropped, counted as dropped_records_total{reason="too_large"} and
	// logged, and the rest acked: no source resends such a chunk forever.
	Emit(ctx context.Context, c Chunk, ack AckFunc) error
}

// Input reads events from somewhere (files, sockets) and emits chunks.
type Input interface {
	// Start begins reading and returns once the input is ready (listening,
	// files opened). It must not block beyond that; the work runs on
	// goroutines the input owns. ctx carries values only; Stop ends the
	// work.
	Start(ctx context.Context, emit Emitter) error
	// Stop stops taking new data, waits until every chunk already emitted
	// has been acknowledged (and the source told: forward acks sent, tail
	// checkpoints written) or ctx is done, and releases every resource.
	Stop(ctx context.Context) error
}

// Readier is implemented by an input that can tell whether it is able to
// take data (a listener that failed for good is not): /readyz reports it.
type Readier interface {
	// Ready returns nil while the input takes data, or why it cannot.
	Ready() error
}

// Filter changes chunks before they reach the buffer. Filters run once,
// before the buffer, and only for the tags they match.
type Filter interface {
	// Filter returns the chunk to pass on. It may return c itself, a new
	// chunk (Count 0 drops the events) or an error, which rejects the chunk
	// back to its input: a Permanent error for a chunk it will never pass
	// (the input drops and acknowledges it), any other for one it may pass
	// later (the input does not acknowledge it).
	Filter(c Chunk) (Chunk, error)
}

// Output delivers batches read from the buffer. The runner reads each
// partition with the output's own cursor, in order, skips the tags the
// output does not match and moves the cursor only after the output accepted
// a batch.
type Output interface {
	// Start prepares the output (opens files, dials lazily).
	Start(ctx context.Context) error
	// Write delivers b and returns nil once the receiver accepted it. A
	// Permanent error means the batch can never be delivered: the runner
	// counts and skips it. Any other error is retried with backoff. Write
	// is called concurrently for different partitions, one batch at a time
	// per partition. The output must not keep b.Entries after returning.
	Write(ctx context.Context, b Batch) error
	// Stop flushes and releases resources; no Write is in flight.
	Stop(ctx context.Context) error
}

// Reopener is implemented by an output that writes to files by name (the
// file output). A reload (SIGHUP) calls Reopen on every output it keeps
// running, after the new config is applied, so that a file renamed away
// by logrotate is let go and the next batches go to a file at the
// configured path (logrotate's rename, then SIGHUP). Reopen may run while
// Write is in flight; it must not lose or duplicate a batch. An error is
// logged by the caller, and the output keeps writing where it did.
type Reopener interface {
	Reopen() error
}

// PipelinedOutput is an Output that keeps several batches of a partition in
// flight at once (a network output waiting for acknowledgements).
type PipelinedOutput interface {
	Output
	// WriteAsync starts delivering b and calls done exactly once when the
	// receiver accepted it (nil) or it can never be delivered (a Permanent
	// error), or the output was stopped (any other error: the batch stays
	// in the buffer). The output retries transient failures itself.
	// b.Entries may be kept until done is called.
	WriteAsync(ctx context.Context, b Batch, done func(error))
	// MaxInFlight is the number of batches per partition that may be in
	// flight at once.
	MaxInFlight() int
}

// BatchRecycler is implemented by an output that keeps the rule on
// b.Entries to the letter on every path (retries, stops, cancelled
// contexts included): it never reads them once Write returned or done was
// called. The runner then gives their memory back to the buffer, to read
// later batches into, instead of leaving one allocation per batch to the
// garbage collector.
type BatchRecycler interface {
	Output
	// RecyclesBatches reports whether the runner may reuse the memory of
	// b.Entries once Write returned or done was called.
	RecyclesBatches() bool
}

// permanentError marks an error that retrying cannot cure.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err to say that retrying cannot cure it.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, is Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Kind is the role a plugin plays.
type Kind string

// The plugin kinds.
const (
	KindInput  Kind = "input"
	KindFilter Kind = "filter"
	KindOutput Kind = "output"
)

// Config is a plugin's configuration struct. The config loader decodes the
// plugin's YAML block into it (unknown keys are errors) and then calls
// Validate. A Validate error may be, or join, FieldErrors so that the
// message names the key and its line.
type Config interface {
	Validate() error
}

// FieldError is a validation error about one key of a plugin's config.
type FieldError struct {
	Field string // the YAML key, dotted for nested keys: "tls.cert_file"
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// FieldErr is a shorthand for &FieldError{field, fmt.Errorf(format, args...)}.
func FieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Settings is what every plugin instance gets besides its config.
type Settings struct {
	Name    string // unique component name, TYPE.INDEX when not configured
	Type    string
	Role    string // "agent" or "aggregator"
	DataDir string // the service's data_dir; a plugin keeps its state under DataDir/<kind>/<name>
	// NodeName is this process's node identity (service.node_name: the
	// NODE_NAME environment variable or the hostname by default); plugins
	// use it where they name themselves to a peer. It may be "" in tests.
	NodeName string
	Logger   *zap.Logger
	Metrics  *ComponentMetrics
}

// Factory creates instances of one plugin type. Make one with
// NewInputFactory, NewFilterFactory or NewOutputFactory: the plugin's
// create function then takes its own config type and returns its own kind,
// so the compiler catches a plugin of the wrong shape (OpenTelemetry's
// receiver.NewFactory and exporter.NewFactory work the same way).
type Factory struct {
	Type string
	Kind Kind
	// NewConfig returns a pointer to a config struct holding the defaults.
	NewConfig func() Config
	create    func(set Settings, cfg Config) (Instance, error)
}

// Instance is one created plugin: the field of its factory's kind is set,
// the others are nil. Instances compare equal when they are the same
// plugin object.
type Instance struct {
	Input  Input
	Filter Filter
	Output Output
}

// InstanceOf wraps v as an Instance of kind; it panics when v is not of
// that kind. For tests that build components by hand.
func InstanceOf(kind Kind, v any) Instance {
	switch kind {
	case KindInput:
		return Instance{Input: v.(Input)}
	case KindFilter:
		return Instance{Filter: v.(Filter)}
	case KindOutput:
		return Instance{Output: v.(Output)}
	}
	panic(fmt.Sprintf("pipeline: unknown kind %q", kind))
}

// Create builds an instance from a config made by NewConfig (and
// decoded and validated by the config loader).
func (f Factory) Create(set Settings, cfg Config) (Instance, error) {
	if f.create == nil {
		return Instance{}, fmt.Errorf("%s %q: factory made without a New*Factory constructor", f.Kind, f.Type)
	}
	return f.create(set, cfg)
}

// typedCreate checks once, for every plugin, that the config is of the
// plugin's own type.
func typedCreate[C Config, T any](kind Kind, typ string, create func(Settings, C) (T, error), wrap func(T) Instance) func(Settings, Config) (Instance, error) {
	return func(set Settings, cfg Config) (Instance, error) {
		c, ok := cfg.(C)
		if !ok {
			var want C
			return Instance{}, fmt.Errorf("%s %q: config of type %T, want %T", kind, typ, cfg, want)
		}
		v, err := create(set, c)
		if err != nil {
			return Instance{}, err
		}
		return wrap(v), nil
	}
}

// NewInputFactory makes the factory of an input plugin.
func NewInputFactory[C Config](typ string, newConfig func() C, create func(Settings, C) (Input, error)) Factory {
	return Factory{Type: typ, Kind: KindInput, NewConfig: func() Config { return newConfig() },
		create: typedCreate(KindInput, typ, create, func(v Input) Instance { return Instance{Input: v} })}
}

// NewFilterFactory makes the factory of a filter plugin.
func NewFilterFactory[C Config](typ string, newConfig func() C, create func(Settings, C) (Filter, error)) Factory {
	return Factory{Type: typ, Kind: KindFilter, NewConfig: func() Config { return newConfig() },
		create: typedCreate(KindFilter, typ, create, func(v Filter) Instance { return Instance{Filter: v} })}
}

// NewOutputFactory makes the factory of an output plugin.
func NewOutputFactory[C Config](typ string, newConfig func() C, create func(Settings, C) (Output, error)) Factory {
	return Factory{Type: typ, Kind: KindOutput, NewConfig: func() Config { return newConfig() },
		create: typedCreate(KindOutput, typ, create, func(v Output) Instance { return Instance{Output: v} })}
}

// Registry holds the factories the engine may use. The engine names no
// plugin: the binary fills a Registry from plugins/all.
type Registry struct {
	factories map[Kind]map[string]Factory
}

// NewRegistry builds a registry and rejects duplicates.
func NewRegistry(fs ...Factory) (*Registry, error) {
	r := &Registry{factories: map[Kind]map[string]Factory{}}
	for _, f := range fs {
		if f.Type == "" || f.NewConfig == nil || f.create == nil {
			return nil, fmt.Errorf("factory %q (%s) is incomplete", f.Type, f.Kind)
		}
		m := r.factories[f.Kind]
		if m == nil {
			m = map[string]Factory{}
			r.factories[f.Kind] = m
		}
		if _, dup := m[f.Type]; dup {
			return nil, fmt.Errorf("%s type %q registered twice", f.Kind, f.Type)
		}
		m[f.Type] = f
	}
	return r, nil
}

// Lookup finds a factory.
func (r *Registry) Lookup(k Kind, typ string) (Factory, bool) {
	f, ok := r.factories[k][typ]
	return f, ok
}

// Types lists the registered types of a kind, sorted.
func (r *Registry) Types(k Kind) []string {
	var out []string
	for t := range r.factories[k] {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
