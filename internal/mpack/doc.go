// Package mpack reads and writes the msgpack that logship moves: it finds
// where a value ends without decoding it (SkipValue, SkipCount), reads
// headers, strings and times in place, appends values, holds Fluentd's
// EventTime, walks the [time, record] entries of a chunk and renders a
// record as JSON. It allocates nothing on its paths that read, and imports
// nothing but the standard library, so the engine and every plugin can
// share it.
//
// Readers take the bytes at the start of a slice and return what they read
// and the bytes it took; results alias the input. ErrShortBuffer says the
// value goes on past the slice (a streaming reader reads more and retries),
// ErrMalformed that the bytes are not what was expected.
package mpack
