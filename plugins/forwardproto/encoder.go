package forwardproto

import (
	"fmt"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/logship/logship/internal/mpack"
)

// Encoder builds PackedForward requests for the forward output. It keeps its
// compressors between calls. An Encoder is not safe for concurrent use; the
// zero value is ready to use.
type Encoder struct {
	gz *gzip.Writer
	zw *zstd.Encoder
	w  sliceWriter
}

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder { return &Encoder{} }

// sliceWriter appends what it is given to b.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// AppendPackedForward appends the request [tag, entries, {"chunk": chunk,
// "size": count, "compressed": ...}] to dst: entries (the pipeline's
// concatenated [time, record] arrays, sent as they are) as a bin, compressed
// as a single gzip member (fastest level) or a zstd frame when c says so. An
// empty chunk omits the chunk option: the receiver will not answer.
func (e *Encoder) AppendPackedForward(dst []byte, tag string, entries []byte, count int, chunk string, c Compression) ([]byte, error) {
	dst = mpack.AppendArrayHeader(dst, 3)
	dst = mpack.AppendString(dst, tag)
	switch c {
	case CompressNone:
		dst = mpack.AppendBin(dst, entries)
	case CompressGzip:
		var at int
		dst, at = reserve5(dst)
		e.w.b = dst
		if e.gz == nil {
			gz, err := gzip.NewWriterLevel(&e.w, gzip.BestSpeed)
			if err != nil {
				return dst[:at], err
			}
			e.gz = gz
		} else {
			e.gz.Reset(&e.w)
		}
		_, err := e.gz.Write(entries)
		if err == nil {
			err = e.gz.Close()
		}
		dst, e.w.b = e.w.b, nil
		if err != nil {
			return dst[:at], fmt.Errorf("forwardproto: gzip: %w", err)
		}
		dst = patchHeader(dst, at, famBin, len(dst)-at-5)
	case CompressZstd:
		if e.zw == nil {
			zw, err := zstd.NewWriter(nil,
				zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderLevel(zstd.SpeedFastest),
				zstd.WithZeroFrames(true))
			if err != nil {
				return dst, fmt.Errorf("forwardproto: zstd: %w", err)
			}
			e.zw = zw
		}
		var at int
		dst, at = reserve5(dst)
		dst = e.zw.EncodeAll(entries, dst)
		dst = patchHeader(dst, at, famBin, len(dst)-at-5)
	default:
		return dst, fmt.Errorf("forwardproto: unknown compression %d", int(c))
	}
	return appendOptions(dst, count, chunk, c), nil
}

// AppendPackedForwardAround appends to dst what AppendPackedForward with
// CompressNone would, except the n bytes of entries themselves: the request
// is out[len(dst):at], then the entries, then out[at:]. A writer sends the
// three with one writev, the entries from where they are, uncopied.
func AppendPackedForwardAround(dst []byte, tag string, n, count int, chunk string) (out []byte, at int) {
	dst = mpack.AppendArrayHeader(dst, 3)
	dst = mpack.AppendString(dst, tag)
	dst = mpack.AppendBinHeader(dst, n)
	at = len(dst)
	return appendOptions(dst, count, chunk, CompressNone), at
}

// appendOptions appends a PackedForward request's option map.
func appendOptions(dst []byte, count int, chunk string, c Compression) []byte {
	nopt := 1
	if chunk != "" {
		nopt++
	}
	if c != CompressNone {
		nopt++
	}
	dst = mpack.AppendMapHeader(dst, nopt)
	if chunk != "" {
		dst = mpack.AppendString(mpack.AppendString(dst, "chunk"), chunk)
	}
	dst = mpack.AppendString(dst, "size")
	if count >= 0 {
		dst = mpack.AppendUint(dst, uint64(count))
	} else {
		dst = mpack.AppendInt(dst, int64(count))
	}
	if c != CompressNone {
		dst = mpack.AppendString(mpack.AppendString(dst, "compressed"), c.String())
	}
	return dst
}

// AppendAck appends the answer to a request that carried a chunk option,
// {"ack": chunk}, in msgpack, or in JSON when the request came as JSON
// (Request.JSON). Send it only once the chunk's events are durable.
func AppendAck(dst, chunk []byte, json bool) []byte {
	if json {
		dst = append(dst, `{"ack":`...)
		dst = mpack.AppendJSONString(dst, chunk)
		return append(dst, '}')
	}
	dst = append(dst, 0x81, 0xa3, 'a', 'c', 'k')
	return mpack.AppendStringBytes(dst, chunk)
}

// NextAck reads the next answer to a request sent with a chunk option and
// returns its chunk id, {"ack": id}, msgpack or JSON. Acks may come in any
// order (a receiver acks each chunk once it is durable): match them by id.
func (d *Decoder) NextAck() (string, error) {
	f, _, err := d.nextFrame(d.lim.MaxFrameBytes)
	if err != nil {
		return "", err
	}
	n, p, err := mpack.ReadMapHeader(f)
	if err != nil {
		return "", d.fail(fmt.Errorf("%w: ack is not a map: %w", ErrMalformed, err))
	}
	for range n {
		k, kn, kerr := mpack.ReadString(f[p:])
		if kerr != nil {
			k = nil
			kn, _ = mpack.SkipValue(f[p:])
		}
		p += kn
		if string(k) == "ack" {
			v, _, err := mpack.ReadString(f[p:])
			if err != nil {
				return "", d.fail(fmt.Errorf("%w: ack is not a string: %w", ErrMalformed, err))
			}
			return string(v), nil
		}
		vn, _ := mpack.SkipValue(f[p:])
		p += vn
	}
	return "", d.fail(fmt.Errorf("%w: answer without ack", ErrMalformed))
}
