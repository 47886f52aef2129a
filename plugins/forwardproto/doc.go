// Package forwardproto is the codec for the Fluentd forward protocol, shared
// by the forward input (a server) and the forward output (a client). It does
// no networking of its own: plugins wrap a net.Conn in a Decoder and write
// the bytes the Append functions build.
//
// # Server (forward input)
//
//	dec := forwardproto.NewDecoder(conn, forwardproto.Limits{})
//	// only with a shared key:
//	helo := forwardproto.NewHelo(len(users) > 0)
//	conn.Write(forwardproto.AppendHelo(nil, helo))
//	ping, err := dec.NextPing()
//	if err == nil {
//		err = forwardproto.VerifyPing(ping, helo, sharedKey, users)
//	}
//	conn.Write(forwardproto.AppendPong(nil, helo, ping, hostname, sharedKey, err))
//	if err != nil { close }
//	for {
//		req, err := dec.Next() // io.EOF at a clean end; any other error: close
//		... append req.Tag / req.Entries / req.Count to the buffer ...
//		if req.HasChunk { once durable: conn.Write(forwardproto.AppendAck(nil, chunk, req.JSON)) }
//	}
//
// # Client (forward output)
//
//	enc := forwardproto.NewEncoder()
//	dec := forwardproto.NewDecoder(conn, forwardproto.Limits{})
//	// only with a shared key:
//	helo, _ := dec.NextHelo()
//	salt := forwardproto.NewSalt()
//	ping, _ := forwardproto.AppendPing(nil, helo, auth, salt)
//	conn.Write(ping)
//	pong, _ := dec.NextPong()
//	err := forwardproto.VerifyPong(pong, helo, auth, salt)
//	// per chunk:
//	id := forwardproto.EpochChunkID(sender, epoch, partition, offset)
//	buf, _ = enc.AppendPackedForward(buf[:0], tag, entries, count, id, forwardproto.CompressGzip)
//	conn.Write(buf)
//	acked, err := dec.NextAck() // == id
//
// # What the decoder accepts
//
// A connection carries msgpack values back to back, or JSON values when its
// first non-whitespace byte is '[' or '{' (decided once per connection;
// answer such a request in JSON, Request.JSON says so). A bare nil is a
// heartbeat and is skipped. A request is an array whose second element picks
// the mode: Message [tag, time, record, option?], Forward
// [tag, [[time, record], ...], option?], PackedForward [tag, entries,
// option?] with entries a bin or str of concatenated [time, record] arrays,
// and CompressedPackedForward, PackedForward with option compressed "gzip"
// (several concatenated members allowed) or "zstd"; "text" means plain.
//
// Every mode comes out the same way: Request.Entries holds concatenated
// msgpack [time, record] arrays, time an integer or an EventTime ext, record
// a map: the pipeline's chunk format. PackedForward entries that need no
// change are returned as the received bytes, without copying or decoding the
// records. Only entries that need it are rewritten: a float time or a
// msgpack timestamp (ext -1) becomes an EventTime, Fluent Bit's
// [[time, metadata], record] becomes [time, record] (the metadata is
// discarded), and a time of nil, 0 or below 0 becomes the time of decoding.
// An event whose record is not a map, whose entry is not a two-element array
// or whose time is not a time is dropped and counted in Request.Dropped, as
// fluentd does; the request is still acknowledged. So is an event whose
// record nests maps and arrays deeper than Limits.MaxDepth (counted in
// Request.TooDeep as well): the request's other events are kept (the
// entries are rewritten without it) and acknowledged.
//
// Options: chunk (str or bin) is returned raw in Request.Chunk; compressed
// is honoured for PackedForward; size and every other key are ignored, so a
// size holding a byte length (npm fluent-logger) is fine. Options may be an
// empty map or nil.
//
// # Limits and errors
//
// Whatever a peer sends, one decoder's memory and work per request are
// bounded by its Limits:
//
//   - Limits.MaxFrameBytes (default 16 MiB): a frame (one top-level value)
//     larger fails with ErrFrameTooLarge as soon as its headers prove it,
//     without buffering it: a bin32 header claiming 4 GiB fails after five
//     bytes. Within the limit the read buffer grows (by doubling) as bytes
//     arrive, not to what a header claims.
//   - Limits.MaxDecompressedBytes (default 64 MiB): entries that inflate, or
//     grow when rewritten (times made EventTime, JSON transcoded), beyond it
//     fail with ErrDecompressedTooLarge without inflating further.
//   - Limits.MaxEntries (default 1,000,000): a request with more events
//     fails with ErrTooManyEntries (a 30 KB gzip member can hold ten million
//     3-byte events).
//   - Limits.MaxDepth (default 128, as fluentd's msgpack-ruby and the tail
//     input's JSON parser allow): an event whose record nests deeper is
//     dropped, see above. Every walk
//     over a record is iterative and linear in its length, whatever the
//     nesting; a JSON frame nested deeper than MaxDepth+4 is ErrMalformed.
//   - Limits.MaxHandshakeBytes (default 4 KiB): the largest HELO, PING or
//     PONG; a server reads the PING before the client is authenticated.
//   - MaxChunkIDBytes (1 KiB): a longer chunk option is ErrMalformed.
//
// One request therefore holds at most Limits.RequestBytes: MaxFrameBytes
// (read buffer), twice MaxDecompressedBytes (inflated and rewritten
// entries) and a zstd window, which is capped at 8 MiB (what zstd levels up
// to 19 use; a frame asking for a larger window fails with
// ErrDecompressedTooLarge). The decoder builds no per-event structures:
// entries stay concatenated bytes. Limits.Memory,
// when set, is asked before any buffer grows (it may wait: a server stops
// reading, which is TCP backpressure, or refuse) and told when buffers are
// released: a decoder waiting for a new frame with nothing buffered drops
// what a large request left, keeping IdleBytes (76 KiB) at most, while a
// peer streaming requests back to back keeps its buffers and costs no
// allocation.
//
// Bytes that are not a valid request fail with ErrMalformed. These errors,
// and an error of Limits.Memory, are final: the decoder returns the same
// error from then on and the connection must be closed. Errors of the
// underlying reader (a deadline, say) are returned as they are and are not
// final: the next call resumes where the stream stopped.
//
// # Handshake
//
// With a shared key the server greets with HELO, the client answers PING,
// the server answers PONG (NewHelo, AppendHelo, NextPing, VerifyPing,
// AppendPong on the server; NextHelo, AppendPing, NextPong, VerifyPong on the
// client). Digests are lowercase hex SHA-512, as fluentd computes them.
package forwardproto
