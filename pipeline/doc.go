// Package pipeline is logship's engine: the plugin interfaces (Input,
// Filter, Output and their typed factories), tag patterns, component
// metrics, and the Runner that wires inputs, filters, the buffer (package
// broker) and outputs, and starts, updates and stops them.
//
// Data flows one way: an input hands chunks to its Emitter; the emitter
// runs the matching filters, splits a chunk too large for one buffer record
// and appends to the buffer, and the input learns through its AckFunc when
// the chunk is durable. Every output reads each partition through its own
// cursor, in order, and the cursor moves only once the output accepted a
// batch. Errors are classified once for both sides: nil, Permanent (never
// retried: dropped and counted) or retryable.
//
// The engine names no plugin: the binary passes the factories of
// plugins/all to NewRegistry. The msgpack it moves is read and written with
// internal/mpack.
package pipeline
