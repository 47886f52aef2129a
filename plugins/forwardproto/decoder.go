package forwardproto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/internal/mpack"
)

// Default limits.
const (
	DefaultMaxFrameBytes        = 16 << 20
	DefaultMaxDecompressedBytes = 64 << 20
	DefaultMaxEntries           = 1000000
	DefaultMaxDepth             = 128
	DefaultMaxHandshakeBytes    = 4 << 10
)

// MaxChunkIDBytes is the longest chunk option accepted: real clients send
// 16 bytes or their 24 characters of base64. A longer one is ErrMalformed,
// so that the copies kept for pending acknowledgements stay small.
const MaxChunkIDBytes = 1024

// Limits bound what one connection's decoder may hold in memory and how much
// work one request may cost. The zero value means the defaults.
type Limits struct {
	// MaxFrameBytes is the largest frame (one request, with its entries,
	// as it travels on the wire) accepted. Default 16 MiB.
	MaxFrameBytes int
	// MaxDecompressedBytes is the largest size one request's entries may
	// take once decompressed, and once rewritten (a time rewritten as an
	// EventTime grows an entry by up to 9 bytes, a JSON frame grows when
	// transcoded). Default 64 MiB.
	MaxDecompressedBytes int
	// MaxEntries is the most events (kept and dropped) one request may
	// carry; a request with more fails with ErrTooManyEntries. Default
	// 1,000,000.
	MaxEntries int
	// MaxDepth is how deep maps and arrays may nest in one record, the
	// record itself counting as 1. A deeper event is dropped and counted in
	// Request.TooDeep; the rest of the request is kept. Default 128, as
	// fluentd's msgpack-ruby unpacker and logship's tail input allow.
	MaxDepth int
	// MaxHandshakeBytes is the largest HELO, PING or PONG accepted: with a
	// shared key the PING is read before the client is authenticated.
	// Default 4 KiB.
	MaxHandshakeBytes int
	// Memory, when set, is told how much memory the decoder's buffers hold
	// beyond IdleBytes, before they grow and after they shrink: a budget
	// shared by many connections.
	Memory Memory
}

// Memory accounts for the buffers of a Decoder (see Limits.Memory).
type Memory interface {
	// Resize reports that the decoder's buffers will hold n bytes beyond
	// IdleBytes. It is called before a buffer grows, and may wait until
	// the memory is available; an error stops the decoder: the call that
	// grew returns it, and it is final. It is called again, with a smaller
	// n, when buffers are released (the error is then ignored). The
	// decoder releases its large buffers whenever it waits for a new frame
	// with nothing buffered, so an idle connection holds no more than
	// IdleBytes.
	Resize(n int) error
}

// IdleBytes is what every decoder may keep without telling Limits.Memory:
// its initial read buffer and small scratch buffers.
const IdleBytes = initialBuffer + 3*retainSmall

// RequestBytes is the most memory one request may make a decoder hold: the
// frame, its entries inflated and rewritten, and a zstd window. A Memory
// budget smaller than this refuses the largest requests the limits allow.
func (l Limits) RequestBytes() int {
	l = l.withDefaults()
	return l.MaxFrameBytes + 2*l.MaxDecompressedBytes + zstdMaxWindow + zstdOverhead
}

func (l Limits) withDefaults() Limits {
	if l.MaxFrameBytes <= 0 {
		l.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if l.MaxDecompressedBytes <= 0 {
		l.MaxDecompressedBytes = DefaultMaxDecompressedBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxHandshakeBytes <= 0 {
		l.MaxHandshakeBytes = DefaultMaxHandshakeBytes
	}
	return l
}

// Mode is the shape a request arrived in.
type Mode int

// The four forward-protocol modes.
const (
	ModeMessage                 Mode = iota + 1 // [tag, time, record, option?]
	ModeForward                                 // [tag, [[time, record], ...], option?]
	ModePackedForward                           // [tag, bin|str entries, option?]
	ModeCompressedPackedForward                 // PackedForward with option compressed gzip or zstd
)

// String returns the mode's name as the protocol specification spells it.
func (m Mode) String() string {
	switch m {
	case ModeMessage:
		return "Message"
	case ModeForward:
		return "Forward"
	case ModePackedForward:
		return "PackedForward"
	case ModeCompressedPackedForward:
		return "CompressedPackedForward"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Compression is the compressed option of a PackedForward request.
type Compression int

// Supported compressions.
const (
	CompressNone Compression = iota // no option, or "text"
	CompressGzip                    // "gzip": one or more concatenated gzip members
	CompressZstd                    // "zstd" (fluentd 1.19+)
)

// String returns the value of the compressed option: text, gzip or zstd.
func (c Compression) String() string {
	switch c {
	case CompressNone:
		return "text"
	case CompressGzip:
		return "gzip"
	case CompressZstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// Request is one decoded request. Its byte slices alias the decoder's
// buffers: they are valid until the next call on the Decoder. Copy what must
// outlive it (the chunk id of a pending ack, say).
type Request struct {
	// Tag is the request's tag.
	Tag string
	// Entries are the events as concatenated msgpack [time, record] arrays,
	// time an integer or an EventTime ext and never nil, 0 or negative,
	// record a map: the pipeline's chunk format.
	Entries []byte
	// Count is the number of events in Entries.
	Count int
	// Dropped is the number of invalid events left out (record not a map,
	// entry not a [time, record] array, time not a time, record nested
	// deeper than Limits.MaxDepth).
	Dropped int
	// TooDeep is how many of the Dropped events were left out because
	// their record nests deeper than Limits.MaxDepth.
	TooDeep int
	// Chunk is the chunk option's value, raw. Answer AppendAck(Chunk) once
	// the events are durable.
	Chunk []byte
	// HasChunk reports whether the request carried a chunk option (it may
	// be empty): if not, send no answer.
	HasChunk bool
	// Mode is the shape the request arrived in.
	Mode Mode
	// Compression is the compression of a CompressedPackedForward request.
	Compression Compression
	// JSON reports a JSON connection: answer in JSON.
	JSON bool
	// FrameBytes is the size of the request on the wire.
	FrameBytes int
}

// Stream formats, decided by a connection's first non-whitespace byte.
const (
	formatUnknown = iota
	formatMsgpack
	formatJSON
)

const (
	initialBuffer = 64 << 10
	zstdMaxWindow = 8 << 20   // the largest zstd window accepted (what levels up to 19 use)
	zstdOverhead  = 256 << 10 // zstd block buffers beside the window
	retainSmall   = 4 << 10   // scratch buffers kept while idle
	maxEmptyReads = 100
	maxTags       = 256
)

// Decoder reads forward-protocol values from a stream: requests on the
// server side (Next, NextPing), answers on the client side (NextHelo,
// NextPong, NextAck). It buffers what it reads and reuses its buffers, so
// decoding PackedForward allocates nothing in steady state. A Decoder is not
// safe for concurrent use.
type Decoder struct {
	r   io.Reader
	lim Limits

	buf  []byte  // len == cap; unconsumed bytes are buf[start:end]
	bufH *[]byte // buf's handle in the pool
	// inBuf: the last request's entries lie in buf, as they came (Detach);
	// detached: buf was handed over and is still counted in Limits.Memory
	// until the decoder waits for the next frame
	inBuf, detached bool
	// hint is the size the last large frame needed: the next frame larger
	// than initialBuffer grows to it at once instead of doubling.
	hint       int
	start, end int
	rerr       error // a read error held back because enough data came with it
	format     int
	inFrame    bool // a frame has started: no heartbeat or whitespace skipping
	mf         msgFramer
	jf         jsonFramer
	err        error // final error

	req      Request
	out      []byte // rewritten entries
	inflated []byte // decompressed entries
	jbuf     []byte // a JSON frame as msgpack
	src      bytes.Reader
	gz       *gzip.Reader
	zd       *zstd.Decoder
	zdCost   int // what zd may hold: its window and block buffers

	lastTag string
	tags    map[string]string

	stack   []int // skipDepth's stack, Limits.MaxDepth long
	charged int   // what Limits.Memory was last told

	now     mpack.EventTime // time of decoding, fetched once per request
	hasNow  bool
	nowFunc func() mpack.EventTime
}

// NewDecoder returns a decoder reading from r (usually a net.Conn; the
// decoder buffers, so do not wrap it in a bufio.Reader).
func NewDecoder(r io.Reader, lim Limits) *Decoder {
	d := &Decoder{nowFunc: mpack.Now}
	d.lim = lim.withDefaults()
	d.r = r
	d.stack = make([]int, d.lim.MaxDepth)
	return d
}

// Reset makes d read a new stream from r, keeping its buffers, so a pool of
// decoders can serve many connections.
func (d *Decoder) Reset(r io.Reader) {
	d.r = r
	d.start, d.end = 0, 0
	d.rerr, d.err = nil, nil
	d.format = formatUnknown
	d.inFrame = false
	d.mf.reset()
	d.jf.reset()
	d.req = Request{}
}

// Buffered returns the number of bytes read from the stream but not yet
// consumed.
func (d *Decoder) Buffered() int { return d.end - d.start }

func (d *Decoder) fail(err error) error {
	d.err = err
	return err
}

// fill reads until at least need bytes are buffered after start.
func (d *Decoder) fill(need int) error {
	if d.start > 0 && (need > len(d.buf)-d.start || d.start >= len(d.buf)/2) {
		// Make room: for need, or for large reads.
		d.end = copy(d.buf, d.buf[d.start:d.end])
		d.start = 0
	}
	empty := 0
	for d.end-d.start < need {
		if d.rerr != nil {
			err := d.rerr
			d.rerr = nil
			return err
		}
		if d.end == len(d.buf) {
			// Full (and start is 0): grow by doubling as bytes arrive, so
			// that memory follows what the peer sent, not what a header
			// claims; within the frame limit, or need if that is more.
			size := max(initialBuffer, 2*len(d.buf))
			if len(d.buf) > 0 {
				// The frame is larger than the buffer: grow to what the
				// last large one needed at once.
				size = max(size, d.hint)
				d.hint = 0
			}
			size = min(size, max(need, d.lim.MaxFrameBytes))
			if err := d.account(d.footprint() - len(d.buf) + size); err != nil {
				return err
			}
			nb, nh := getBuf(size)
			d.end = copy(nb, d.buf[d.start:d.end])
			d.start = 0
			putBuf(d.bufH)
			d.buf, d.bufH = nb, nh
		}
		n, err := d.r.Read(d.buf[d.end:])
		d.end += n
		if err != nil {
			if d.end-d.start >= need {
				d.rerr = err
				return nil
			}
			return err
		}
		if n == 0 {
			if empty++; empty >= maxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// footprint is the bytes the decoder's buffers hold.
func (d *Decoder) footprint() int {
	return len(d.buf) + cap(d.inflated) + cap(d.out) + cap(d.jbuf) + d.zdCost
}

// account tells Limits.Memory that the buffers are about to hold total
// bytes. An error is final.
func (d *Decoder) account(total int) error {
	if d.lim.Memory == nil {
		return nil
	}
	n := max(0, total-IdleBytes)
	if n == d.charged {
		return nil
	}
	if err := d.lim.Memory.Resize(n); err != nil && n > d.charged {
		return d.fail(err)
	}
	d.charged = n
	return nil
}

// release drops the buffers a large request left, once the decoder waits
// for a new frame with nothing buffered: an idle connection keeps
// IdleBytes at most. A connection streaming requests back to back keeps its
// buffers, so that the steady state allocates nothing.
func (d *Decoder) release() {
	if len(d.buf) <= initialBuffer && cap(d.inflated) <= retainSmall && cap(d.out) <= retainSmall && cap(d.jbuf) <= retainSmall && d.zd == nil {
		if d.detached {
			d.detached = false
			_ = d.account(d.footprint())
		}
		return
	}
	d.detached = false
	if d.zd != nil {
		d.zd.Close()
		d.zd, d.zdCost = nil, 0
	}
	if len(d.buf) > initialBuffer {
		// Requests are valid until the next Decode: nothing refers to
		// the buffer any more, another connection may take it.
		d.hint = len(d.buf)
		putBuf(d.bufH)
		d.buf, d.bufH, d.start, d.end = nil, nil, 0, 0
	}
	if cap(d.inflated) > retainSmall {
		d.inflated = nil
	}
	if cap(d.out) > retainSmall {
		d.out = nil
	}
	if cap(d.jbuf) > retainSmall {
		d.jbuf = nil
	}
	_ = d.account(d.footprint())
}

// grow returns buf, which is d.out or a slice of it, with room for n more
// bytes, accounted, within MaxDecompressedBytes. A new buffer becomes d.out.
func (d *Decoder) grow(buf []byte, n int) ([]byte, error) {
	if cap(buf)-len(buf) >= n {
		return buf, nil
	}
	limit := d.lim.MaxDecompressedBytes
	if len(buf)+n > limit {
		return buf, fmt.Errorf("%w: entries rewritten to more than %d bytes", ErrDecompressedTooLarge, limit)
	}
	size := min(max(2*cap(buf), len(buf)+n, retainSmall), limit)
	if err := d.account(d.footprint() - cap(d.out) + size); err != nil {
		return buf, err
	}
	nb := make([]byte, len(buf), size)
	copy(nb, buf)
	d.out = nb
	return nb, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// nextFrame returns the next complete frame as msgpack (a JSON frame is
// transcoded), skipping heartbeats, and consumes it. The frame is valid until
// the next call. It returns io.EOF at a clean end of stream.
func (d *Decoder) nextFrame(max int) (frame []byte, wire int, err error) {
	if d.err != nil {
		return nil, 0, d.err
	}
	d.hasNow = false
	for {
		if !d.inFrame {
			if d.start == d.end {
				d.release()
				d.start, d.end = 0, 0
				if err := d.fill(1); err != nil {
					return nil, 0, err
				}
			}
			c := d.buf[d.start]
			if d.format != formatMsgpack && isSpace(c) {
				d.start++
				continue
			}
			if d.format == formatUnknown {
				d.format = formatMsgpack
				if c == '[' || c == '{' {
					d.format = formatJSON
				}
			}
			if d.format == formatMsgpack && c == 0xc0 {
				d.start++ // heartbeat
				continue
			}
			d.inFrame = true
		}
		var n, need int
		if d.format == formatJSON {
			n, need, err = d.jf.scan(d.buf[d.start:d.end], max)
		} else {
			n, need, err = d.mf.scan(d.buf[d.start:d.end], max)
		}
		if err != nil {
			return nil, 0, d.fail(err)
		}
		if n > 0 {
			frame = d.buf[d.start : d.start+n]
			d.start += n
			d.inFrame = false
			if d.format == formatJSON {
				d.jbuf, err = appendJSONAsMsgpack(d.jbuf[:0], frame, d.lim.MaxDepth+jsonFrameDepth+1, d.lim.MaxDecompressedBytes)
				if err != nil {
					return nil, 0, d.fail(err)
				}
				if err := d.account(d.footprint()); err != nil {
					return nil, 0, err
				}
				return d.jbuf, n, nil
			}
			return frame, n, nil
		}
		if err := d.fill(need); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, 0, d.fail(fmt.Errorf("%w: stream ended inside a frame after %d bytes", io.ErrUnexpectedEOF, d.end-d.start))
			}
			return nil, 0, err
		}
	}
}

// Next reads the next request, skipping heartbeats. It returns io.EOF when
// the stream ends cleanly between requests. The Request and its slices are
// valid until the next call on d. See the package documentation for errors.
func (d *Decoder) Next() (*Request, error) {
	d.inBuf = false
	frame, wire, err := d.nextFrame(d.lim.MaxFrameBytes)
	if err != nil {
		return nil, err
	}
	d.req = Request{JSON: d.format == formatJSON, FrameBytes: wire}
	if err := d.parseRequest(frame, &d.req); err != nil {
		return nil, d.fail(err)
	}
	return &d.req, nil
}

// Detach hands over the memory the last request was read into (from the
// pool of broker.GetBuffer), when its Entries lie in it as they came (not
// rewritten, inflated or transcoded), it was grown for that request (more
// than an idle connection keeps) and nothing was read beyond the request:
// the caller then owns it (broker.PutBuffer gives it back;
// broker.AppendAsyncOwned takes it with the chunk), and the decoder reads
// the next request into other memory. The Request stays valid as long as
// the caller keeps the memory. It returns nil, handing nothing over,
// otherwise. The memory counts in Limits.Memory until the decoder waits for
// the next request.
func (d *Decoder) Detach() *[]byte {
	if !d.inBuf || d.bufH == nil || d.start != d.end || len(d.buf) <= initialBuffer {
		return nil
	}
	h := d.bufH
	d.hint = len(d.buf) // the next large request grows to it at once
	d.buf, d.bufH, d.start, d.end = nil, nil, 0, 0
	d.inBuf, d.detached = false, true
	return h
}

// tag returns b as a string, reusing the strings of recent tags so that a
// connection repeating its tags does not allocate.
func (d *Decoder) tag(b []byte) string {
	if string(b) == d.lastTag {
		return d.lastTag
	}
	if s, ok := d.tags[string(b)]; ok {
		d.lastTag = s
		return s
	}
	if d.tags == nil || len(d.tags) >= maxTags {
		d.tags = make(map[string]string)
	}
	s := string(b)
	d.tags[s] = s
	d.lastTag = s
	return s
}

func (d *Decoder) nowTime() mpack.EventTime {
	if !d.hasNow {
		d.now, d.hasNow = d.nowFunc(), true
	}
	return d.now
}

// inflate decompresses src into d.inflated, at most MaxDecompressedBytes.
func (d *Decoder) inflate(c Compression, src []byte) ([]byte, error) {
	if len(src) == 0 {
		return nil, nil
	}
	d.src.Reset(src)
	var r io.Reader
	switch c {
	case CompressGzip:
		var err error
		if d.gz == nil {
			d.gz, err = gzip.NewReader(&d.src)
		} else {
			err = d.gz.Reset(&d.src)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrMalformed, err)
		}
		d.gz.Multistream(true)
		r = d.gz
	case CompressZstd:
		if d.zd == nil {
			win := min(max(d.lim.MaxDecompressedBytes, zstd.MinWindowSize), zstdMaxWindow)
			if err := d.account(d.footprint() + win + zstdOverhead); err != nil {
				return nil, err
			}
			d.zdCost = win + zstdOverhead
			zd, err := zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(uint64(win)),
				zstd.WithDecoderMaxMemory(uint64(max(d.lim.MaxDecompressedBytes, zstd.MinWindowSize))))
			if err != nil {
				return nil, fmt.Errorf("forwardproto: zstd: %w", err)
			}
			d.zd = zd
		}
		if err := d.zd.Reset(&d.src); err != nil {
			return nil, fmt.Errorf("%w: zstd: %w", ErrMalformed, err)
		}
		r = d.zd
	}
	limit := d.lim.MaxDecompressedBytes
	out := d.inflated[:0]
	for {
		if len(out) == cap(out) {
			// Grow, but never past one byte over the limit: that byte is
			// how an oversize stream is told apart from one at the limit.
			size := min(max(2*cap(out), initialBuffer, 4*len(src)), limit+1)
			if size <= cap(out) {
				return nil, fmt.Errorf("%w: more than %d bytes", ErrDecompressedTooLarge, limit)
			}
			if err := d.account(d.footprint() - cap(out) + size); err != nil {
				return nil, err
			}
			nb := make([]byte, len(out), size)
			copy(nb, out)
			out = nb
			d.inflated = out
		}
		n, err := r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrDecompressedTooLarge, limit)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				return nil, fmt.Errorf("%w: %w", ErrDecompressedTooLarge, err)
			}
			return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, c, err)
		}
	}
	d.inflated = out
	return out, nil
}

// Read buffers are shared through the broker's pools (broker.GetBuffer),
// one per power-of-two size, from initialBuffer: a synchronous sender's
// connection gives its buffer back while it waits for the next request
// (release) and takes one again for it, without allocating or zeroing
// hundreds of KiB per request; or it hands the buffer over with the
// request's chunk (Detach), and the buffer comes back to the pool once the
// chunk is delivered.
const (
	minPooledShift = 16 // 64 KiB: initialBuffer
	maxPooledShift = 26 // 64 MiB
)

// pooledClass returns the pool of a buffer of size n, or -1.
func pooledClass(n int) int {
	if n < 1<<minPooledShift || n > 1<<maxPooledShift || n&(n-1) != 0 {
		return -1
	}
	return bits.TrailingZeros(uint(n)) - minPooledShift
}

func getBuf(n int) ([]byte, *[]byte) {
	if pooledClass(n) >= 0 {
		h := broker.GetBuffer(n) // a power of two: exactly n
		return *h, h
	}
	b := make([]byte, n)
	return b, &b
}

func putBuf(h *[]byte) {
	if h != nil && pooledClass(len(*h)) >= 0 && cap(*h) == len(*h) {
		broker.PutBuffer(h)
	}
}
