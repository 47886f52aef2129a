package pipeline

import (
	"time"

	"github.com/logship/logship/internal/mpack"
)

// Forwarders to package mpack, kept only until the last call sites (the
// forward input and output, three tail tests) use mpack; new code uses
// mpack.

// EventTime is mpack.EventTime.
type EventTime = mpack.EventTime

// EventTimeOf is mpack.EventTimeOf.
func EventTimeOf(t time.Time) EventTime { return mpack.EventTimeOf(t) }

// ForEachEntry is mpack.ForEachEntry.
func ForEachEntry(entries []byte, fn func(t EventTime, record []byte) error) error {
	return mpack.ForEachEntry(entries, fn)
}

// NextEntry is mpack.NextEntry.
func NextEntry(entries []byte) (t EventTime, record []byte, n int, err error) {
	return mpack.NextEntry(entries)
}

// ReadMapHeader is mpack.ReadMapHeader.
func ReadMapHeader(b []byte) (n, hdr int, err error) { return mpack.ReadMapHeader(b) }

// AppendEntry is mpack.AppendEntry.
func AppendEntry(dst []byte, t EventTime, record []byte) []byte {
	return mpack.AppendEntry(dst, t, record)
}

// AppendMapHeader is mpack.AppendMapHeader.
func AppendMapHeader(dst []byte, n int) []byte { return mpack.AppendMapHeader(dst, n) }

// AppendString is mpack.AppendString.
func AppendString(dst []byte, s string) []byte { return mpack.AppendString(dst, s) }

// AppendStringBytes is mpack.AppendStringBytes.
func AppendStringBytes(dst, s []byte) []byte { return mpack.AppendStringBytes(dst, s) }

// AppendInt is mpack.AppendInt.
func AppendInt(dst []byte, v int64) []byte { return mpack.AppendInt(dst, v) }
