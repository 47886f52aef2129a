package mpack

import (
	"encoding/binary"
	"fmt"
	"time"
)

// EventTimeExtType is the msgpack extension type Fluentd uses for EventTime.
const EventTimeExtType = 0

// EventTime is an event's time with nanosecond precision, encoded on the
// wire as Fluentd's EventTime: msgpack ext type 0 with 8 bytes, big-endian
// uint32 seconds then uint32 nanoseconds.
type EventTime struct {
	Sec  uint32
	Nsec uint32
}

// EventTimeOf converts a time.Time. Times before 1970 or after 2106 do not
// fit in EventTime and are clamped.
func EventTimeOf(t time.Time) EventTime {
	s := t.Unix()
	switch {
	case s < 0:
		return EventTime{}
	case s > 0xFFFFFFFF:
		return EventTime{Sec: 0xFFFFFFFF}
	}
	return EventTime{Sec: uint32(s), Nsec: uint32(t.Nanosecond())}
}

// Now is EventTimeOf(time.Now()).
func Now() EventTime { return EventTimeOf(time.Now()) }

// Time converts back to a time.Time in UTC.
func (t EventTime) Time() time.Time { return time.Unix(int64(t.Sec), int64(t.Nsec)).UTC() }

// IsZero reports whether t is the zero time, which Fluentd peers use for
// "now".
func (t EventTime) IsZero() bool { return t.Sec == 0 && t.Nsec == 0 }

// String formats t as RFC 3339 with nanoseconds.
func (t EventTime) String() string { return t.Time().Format(time.RFC3339Nano) }

// AppendMsgpack appends t as a fixext8 (d7 00 + 8 bytes), the form every
// Fluentd peer accepts.
func (t EventTime) AppendMsgpack(b []byte) []byte {
	b = append(b, 0xd7, EventTimeExtType)
	b = binary.BigEndian.AppendUint32(b, t.Sec)
	return binary.BigEndian.AppendUint32(b, t.Nsec)
}

// ParseEventTimeExt decodes the 8-byte payload of an ext 0 value.
func ParseEventTimeExt(data []byte) (EventTime, error) {
	if len(data) != 8 {
		return EventTime{}, fmt.Errorf("EventTime ext payload is %d bytes, want 8", len(data))
	}
	t := EventTime{Sec: binary.BigEndian.Uint32(data), Nsec: binary.BigEndian.Uint32(data[4:])}
	if t.Nsec >= 1e9 {
		// Out of range (a buggy peer): carry the excess into the seconds
		// rather than drop the event.
		t.Sec += t.Nsec / 1e9
		t.Nsec %= 1e9
	}
	return t, nil
}

// MarshalMsgpack returns t's msgpack encoding, AppendMsgpack's fixext8:
// msgpack libraries that take a value's encoding from this method
// (vmihailenco/msgpack's Marshaler) write EventTime as ext 0.
func (t EventTime) MarshalMsgpack() ([]byte, error) { return t.AppendMsgpack(nil), nil }

// UnmarshalMsgpack is the inverse of MarshalMsgpack: b is the encoding of
// one ext 0 value (fixext8 or ext8).
func (t *EventTime) UnmarshalMsgpack(b []byte) error {
	if len(b) == 0 || (b[0] != 0xd7 && b[0] != 0xc7) {
		return fmt.Errorf("%w: not an EventTime", ErrMalformed)
	}
	v, n, err := ReadTime(b)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d bytes after an EventTime", ErrMalformed, len(b)-n)
	}
	*t = v
	return nil
}
