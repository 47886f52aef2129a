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
//	id := forwardproto.ChunkID(sender, partition, offset)
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
// fluentd does; the request is still acknowledged.
//
// Options: chunk (str or bin) is returned raw in Request.Chunk; compressed
// is honoured for PackedForward; size and every other key are ignored, so a
// size holding a byte length (npm fluent-logger) is fine. Options may be an
// empty map or nil.
//
// # Limits and errors
//
// A frame (one top-level value) larger than Limits.MaxFrameBytes fails with
// ErrFrameTooLarge as soon as its headers prove it, without buffering it: a
// bin32 header claiming 4 GiB fails after five bytes. Decompressed entries
// larger than Limits.MaxDecompressedBytes fail with ErrDecompressedTooLarge
// without inflating further. Bytes that are not a valid request fail with
// ErrMalformed. These three are final: the decoder returns the same error
// from then on and the connection must be closed. Errors of the underlying
// reader (a deadline, say) are returned as they are and are not final: the
// next call resumes where the stream stopped.
//
// # Handshake
//
// With a shared key the server greets with HELO, the client answers PING,
// the server answers PONG (NewHelo, AppendHelo, NextPing, VerifyPing,
// AppendPong on the server; NextHelo, AppendPing, NextPong, VerifyPong on the
// client). Digests are lowercase hex SHA-512, as fluentd computes them.
package forwardproto
