package forwardproto

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/logship/logship/internal/mpack"
)

// parseRequest decodes one complete msgpack frame into req. The frame is
// structurally valid msgpack (the framer checked), the entries inside a bin
// or str are not.
func (d *Decoder) parseRequest(f []byte, req *Request) error {
	n, h, err := mpack.ReadArrayHeader(f)
	if err != nil {
		return fmt.Errorf("%w: a request must be an array: %w", ErrMalformed, err)
	}
	if n < 2 || n > 4 {
		return fmt.Errorf("%w: a request array of %d elements", ErrMalformed, n)
	}
	p := h
	tag, tn, err := mpack.ReadString(f[p:])
	if err != nil {
		return fmt.Errorf("%w: tag is not a string: %w", ErrMalformed, err)
	}
	req.Tag = d.tag(tag)
	p += tn

	var o reqOptions
	switch second := f[p]; {
	case isStrOrBin(second):
		if n > 3 {
			return fmt.Errorf("%w: a PackedForward array of %d elements", ErrMalformed, n)
		}
		raw, rn, _ := mpack.ReadString(f[p:])
		p += rn
		if n == 3 {
			if o, err = parseOptions(f[p:]); err != nil {
				return err
			}
		}
		req.Mode = ModePackedForward
		entries := raw
		if o.comp != CompressNone {
			req.Mode, req.Compression = ModeCompressedPackedForward, o.comp
			if entries, err = d.inflate(o.comp, raw); err != nil {
				return err
			}
		}
		req.Entries, req.Count, req.Dropped, req.TooDeep, err = d.normalise(entries)
		if err != nil {
			return err
		}
		d.inBuf = o.comp == CompressNone && d.uncopied(req.Entries, raw)
	case isArrayByte(second) && !messageTimeArray(f[p:], n):
		if n > 3 {
			return fmt.Errorf("%w: a Forward array of %d elements", ErrMalformed, n)
		}
		_, ah, _ := mpack.ReadArrayHeader(f[p:])
		an, err := mpack.SkipValue(f[p:])
		if err != nil {
			return fmt.Errorf("%w: entries: %w", ErrMalformed, err)
		}
		body := f[p+ah : p+an]
		p += an
		if n == 3 {
			if o, err = parseOptions(f[p:]); err != nil {
				return err
			}
		}
		req.Mode = ModeForward
		req.Entries, req.Count, req.Dropped, req.TooDeep, err = d.normalise(body)
		if err != nil {
			return err
		}
		d.inBuf = d.uncopied(req.Entries, body)
	default:
		if n < 3 {
			return fmt.Errorf("%w: a Message array of %d elements", ErrMalformed, n)
		}
		ev, en, st := d.parseEvent(f[p:])
		if en < 0 {
			return fmt.Errorf("%w: message time or record truncated", ErrMalformed)
		}
		p += en
		if n == 4 {
			if o, err = parseOptions(f[p:]); err != nil {
				return err
			}
		}
		req.Mode = ModeMessage
		switch st {
		case eventOK:
			out, err := d.grow(d.out[:0], 1+15+len(ev.rec))
			if err != nil {
				return err
			}
			d.out = d.appendEvent(out, ev)
			req.Entries, req.Count = d.out, 1
		case eventTooDeep:
			req.Dropped, req.TooDeep = 1, 1
		default:
			req.Dropped = 1
		}
	}
	req.Chunk, req.HasChunk = o.chunk, o.hasChunk
	return nil
}

// uncopied reports whether out, normalise's result, is in, part of a
// msgpack frame in the read buffer, as it came.
func (d *Decoder) uncopied(out, in []byte) bool {
	return d.format == formatMsgpack && len(out) > 0 && len(out) == len(in) && &out[0] == &in[0]
}

// messageTimeArray tells a Message whose time is Fluent Bit's
// [time, metadata] from a Forward request: its second element is an array of
// two whose first element is not an array, and a map (the record) follows.
func messageTimeArray(b []byte, n int) bool {
	if n < 3 {
		return false
	}
	cnt, h, err := mpack.ReadArrayHeader(b)
	if err != nil || cnt != 2 || h >= len(b) || isArrayByte(b[h]) {
		return false
	}
	k, err := mpack.SkipValue(b)
	if err != nil || k >= len(b) {
		return false
	}
	return isMapByte(b[k])
}

// reqOptions are the options the decoder acts on.
type reqOptions struct {
	chunk    []byte
	hasChunk bool
	comp     Compression
}

// parseOptions reads the option map (or nil) at the start of b. Unknown keys,
// and size whatever its value, are ignored.
func parseOptions(b []byte) (reqOptions, error) {
	var o reqOptions
	if len(b) > 0 && b[0] == 0xc0 {
		return o, nil
	}
	n, p, err := mpack.ReadMapHeader(b)
	if err != nil {
		return o, fmt.Errorf("%w: option is not a map: %w", ErrMalformed, err)
	}
	for range n {
		k, kn, err := mpack.ReadString(b[p:])
		if err != nil { // not a string key: not one of ours
			k = nil
			if kn, err = mpack.SkipValue(b[p:]); err != nil {
				return o, fmt.Errorf("%w: option: %w", ErrMalformed, err)
			}
		}
		p += kn
		vn, err := mpack.SkipValue(b[p:])
		if err != nil {
			return o, fmt.Errorf("%w: option: %w", ErrMalformed, err)
		}
		v := b[p : p+vn]
		p += vn
		if v[0] == 0xc0 {
			continue // nil: as if absent
		}
		switch string(k) {
		case "chunk":
			s, _, err := mpack.ReadString(v)
			if err != nil {
				return o, fmt.Errorf("%w: option chunk is not a string: %w", ErrMalformed, err)
			}
			if len(s) > MaxChunkIDBytes {
				return o, fmt.Errorf("%w: option chunk of %d bytes, at most %d", ErrMalformed, len(s), MaxChunkIDBytes)
			}
			o.chunk, o.hasChunk = s, true
		case "compressed":
			s, _, err := mpack.ReadString(v)
			if err != nil {
				return o, fmt.Errorf("%w: option compressed is not a string: %w", ErrMalformed, err)
			}
			switch string(s) {
			case "gzip":
				o.comp = CompressGzip
			case "zstd":
				o.comp = CompressZstd
			case "text", "":
				o.comp = CompressNone
			default:
				return o, fmt.Errorf("%w: unsupported compression %q", ErrMalformed, s)
			}
		}
	}
	return o, nil
}

// event is one [time, record] pair.
type event struct {
	t   mpack.EventTime
	raw []byte // the time's bytes when they can be kept, else nil
	rec []byte
}

// The fate of one event.
const (
	eventOK      = iota
	eventInvalid // not a [time, record] pair, record not a map
	eventTooDeep // record nested deeper than Limits.MaxDepth
)

// parseEvent reads a time and a record at the start of b. n is the bytes
// both take (-1 if they are truncated: the caller's frame is malformed);
// status tells a valid event from one to drop.
func (d *Decoder) parseEvent(b []byte) (ev event, n int, status int) {
	tn, err := mpack.SkipValue(b)
	if err != nil {
		return ev, -1, eventInvalid
	}
	rn, deep, err := skipRecord(b[tn:], d.lim.MaxDepth, d.stack)
	if deep {
		rn, err = mpack.SkipValue(b[tn:])
	}
	if err != nil {
		return ev, -1, eventInvalid
	}
	n = tn + rn
	tb := b[:tn]
	if isArrayByte(tb[0]) { // Fluent Bit 5.x: [time, metadata]
		cnt, h, err := mpack.ReadArrayHeader(tb)
		if err != nil || cnt != 2 {
			return ev, n, eventInvalid
		}
		tb = tb[h:]
	}
	t, k, keep := readTime(tb)
	if k == 0 {
		return ev, n, eventInvalid
	}
	ev.t = t
	if keep {
		ev.raw = tb[:k]
	}
	ev.rec = b[tn:n]
	switch {
	case !isMapByte(ev.rec[0]):
		return ev, n, eventInvalid
	case deep:
		return ev, n, eventTooDeep
	}
	return ev, n, eventOK
}

// keepableTimeByte reports a type byte that may start a time kept as it is:
// an integer or an EventTime (fixext8, ext8). It spares the fast path the
// error values mpack.ReadTime builds for anything else.
func keepableTimeByte(c byte) bool {
	return c <= 0x7f || (c >= 0xcc && c <= 0xd3) || c == 0xd7 || c == 0xc7
}

// parseEntry reads one whole entry, a structurally valid msgpack value.
func (d *Decoder) parseEntry(e []byte) (event, int) {
	cnt, h, err := mpack.ReadArrayHeader(e)
	if err != nil || cnt != 2 {
		return event{}, eventInvalid
	}
	ev, n, st := d.parseEvent(e[h:])
	if h+n != len(e) {
		return ev, eventInvalid
	}
	return ev, st
}

// readTime reads a time: whatever mpack.ReadTime reads, plus the msgpack
// timestamp extension (-1). n is 0 if b does not start with a time; keep
// reports a time whose bytes may be stored as they are (a positive integer
// or a non-zero EventTime).
func readTime(b []byte) (t mpack.EventTime, n int, keep bool) {
	t, n, err := mpack.ReadTime(b)
	if err == nil {
		return t, n, !t.IsZero() && b[0] != 0xca && b[0] != 0xcb
	}
	switch {
	case len(b) >= 6 && b[0] == 0xd6 && b[1] == 0xff:
		return mpack.EventTime{Sec: binary.BigEndian.Uint32(b[2:])}, 6, false
	case len(b) >= 10 && b[0] == 0xd7 && b[1] == 0xff:
		v := binary.BigEndian.Uint64(b[2:])
		return clampTime(int64(v&(1<<34-1)), uint32(v>>34)), 10, false
	case len(b) >= 15 && b[0] == 0xc7 && b[1] == 12 && b[2] == 0xff:
		return clampTime(int64(binary.BigEndian.Uint64(b[7:])), binary.BigEndian.Uint32(b[3:])), 15, false
	}
	return mpack.EventTime{}, 0, false
}

func clampTime(sec int64, nsec uint32) mpack.EventTime {
	switch {
	case sec < 0:
		return mpack.EventTime{}
	case sec > math.MaxUint32:
		return mpack.EventTime{Sec: math.MaxUint32}
	}
	return mpack.EventTime{Sec: uint32(sec), Nsec: nsec}
}

// appendEvent appends ev as a stored entry: [time, record], a time of zero
// (nil, 0, negative) becoming the time of decoding.
func (d *Decoder) appendEvent(dst []byte, ev event) []byte {
	dst = append(dst, 0x92)
	if ev.raw != nil {
		dst = append(dst, ev.raw...)
	} else {
		t := ev.t
		if t.IsZero() {
			t = d.nowTime()
		}
		dst = t.AppendMsgpack(dst)
	}
	return append(dst, ev.rec...)
}

// normalise checks concatenated entries and returns them in the pipeline's
// chunk format. Entries that need no change are kept as they are: if none
// needs one, body itself is returned, uncopied. Invalid events and events
// nested deeper than MaxDepth are dropped and counted; bytes that are not
// msgpack fail with ErrMalformed, more than MaxEntries events with
// ErrTooManyEntries. Every entry is walked once, iteratively, plus once more
// (linearly too) when it is rewritten or dropped.
func (d *Decoder) normalise(body []byte) (out []byte, count, dropped, tooDeep int, err error) {
	var dst []byte
	copied := false
	run := 0 // start of the entries kept as they are and not yet copied
	maxDepth, maxEntries := d.lim.MaxDepth, d.lim.MaxEntries
	for off := 0; off < len(body); {
		if count+dropped >= maxEntries {
			return nil, 0, 0, 0, fmt.Errorf("%w: more than %d events in one request", ErrTooManyEntries, maxEntries)
		}
		e := body[off:]
		// Fast path: fixarray 2, a time kept as it is, a map not too deep.
		if e[0] == 0x92 && len(e) > 1 && keepableTimeByte(e[1]) {
			tn := 0
			if e[1] == 0xd7 && len(e) > 11 && e[2] == 0 {
				// an EventTime, what Fluentd, Fluent Bit and logship send
				if binary.BigEndian.Uint64(e[3:]) != 0 {
					tn = 10
				}
			} else if t, n, err := mpack.ReadTime(e[1:]); err == nil && !t.IsZero() {
				tn = n
			}
			if tn > 0 && 1+tn < len(e) && isMapByte(e[1+tn]) {
				if rn, deep, err := skipRecord(e[1+tn:], maxDepth, d.stack); err == nil && !deep {
					off += 1 + tn + rn
					count++
					continue
				}
			}
		}
		n, err := mpack.SkipValue(e)
		if err != nil {
			return nil, 0, 0, 0, fmt.Errorf("%w: entry %d at offset %d: %w", ErrMalformed, count+dropped, off, err)
		}
		if !copied {
			dst, copied = d.out[:0], true
		}
		ev, st := d.parseEntry(e[:n])
		need := off - run
		if st == eventOK {
			need += 1 + 15 + len(ev.rec)
		}
		if dst, err = d.grow(dst, need); err != nil {
			d.out = dst
			return nil, 0, 0, 0, err
		}
		dst = append(dst, body[run:off]...)
		switch st {
		case eventOK:
			dst = d.appendEvent(dst, ev)
			count++
		case eventTooDeep:
			dropped++
			tooDeep++
		default:
			dropped++
		}
		off += n
		run = off
	}
	if !copied {
		return body, count, dropped, 0, nil
	}
	dst, err = d.grow(dst, len(body)-run)
	if err != nil {
		d.out = dst
		return nil, 0, 0, 0, err
	}
	dst = append(dst, body[run:]...)
	d.out = dst
	return dst, count, dropped, tooDeep, nil
}
