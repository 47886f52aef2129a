// Package forward is the forward output: it ships chunks to logship
// aggregators, fluentd or fluent-bit with the Fluentd forward protocol, as
// PackedForward requests (plain by default, or gzip- or zstd-compressed),
// and moves the buffer's cursor only once the receiver acknowledged them.
//
//	outputs:
//	  - type: forward
//	    match: "**"
//	    servers: [logship-aggregator.logship.svc:24224]  # or agg-0:24224, agg-1:24224
//	    resolve_interval: 30s   # names are resolved again this often
//	    require_ack: true
//	    compress: none          # none | gzip | zstd (see Config.Compress)
//	    shared_key: ""          # set it to do the HELO/PING/PONG handshake
//	    tls: {ca_file: ""}      # any tls key turns TLS on
//
// # Chunk ids and duplicates
//
// Every chunk is sent with an id made of where it sits in the buffer:
// forwardproto.EpochChunkID(sender, epoch, partition, offset), the base64
// of sender(6) | epoch(8) | partition(2) | offset(8), 32 characters. The
// sender id is six random bytes made once and kept in
// data_dir/output/NAME/sender-id, so a chunk sent again after a crash, a
// restart or a failover carries the same id and a logship receiver (which
// remembers the ids it stored) acknowledges it without storing it twice.
// The epoch is the buffer's: it changes whenever the buffer may hand out
// offsets again (the buffer directory was recreated, or an unclean stop
// lost a tail that was not yet synced), so an id never names two different
// contents and new chunks at reused offsets are stored, not mistaken for
// duplicates. Chunks buffered by a release without epochs (epoch 0) keep
// the 16-byte id of that release, sender | partition | offset (24
// characters), so that they still dedup when resent after an upgrade.
// Receivers treat ids as opaque strings: fluentd and Fluent Bit echo them
// in their acks. After a crash this output resends, per partition, the
// chunks acknowledged within the buffer's last cursor flush (250ms) plus up
// to max_in_flight unacknowledged ones; a logship receiver recognises them
// while their ids are in its window (dedup_window, dedup_retention of the
// forward input; sizing in docs/operations.md, "Forward to forward:
// chunk-id dedup").
//
// # Connections, pipelining and failover
//
// Each server has at most one connection, dialed on first use, kept open
// and shared by every partition that sends to it. Up to max_in_flight
// chunks per partition are written back to back without waiting; acks are
// matched to chunks by id, in whatever order they come. Chunks of a
// partition are first written in buffer order. Each partition has its own
// order of preference over the servers (rendezvous hashing of the
// partition, the server's address and the sender id, so that agents spread
// their partitions over the whole tier and a resend after a restart goes
// where the first send went): it sends to its first choice while that is
// healthy, so a logship receiver sees every resend of a chunk and stores
// it once, and to its next healthy choice otherwise. Any failure of a connection (connect, TLS, refused handshake,
// write, read, an ack later than ack_timeout) closes it, marks the server
// down for a backoff that doubles from retry_min to retry_max (with jitter),
// and sends every chunk that was waiting on it again, at once on another
// healthy server or, when none is left, as soon as the first server's
// backoff ends. Chunks are retried until they are acknowledged or the
// output is stopped; what is not acknowledged stays in the buffer.
//
// # DNS names
//
// A server whose host is a name stands for every address it resolves to:
// the IPv4 ones when there are any, else the IPv6 ones (a dual-stack pod
// is one server). Point servers at a Kubernetes headless Service and every
// ready aggregator pod is a server. Names are resolved at start and again
// every resolve_interval (0: once). A new address is used at once and
// takes only the partitions whose first choice it becomes (about 1/n of
// them); an address that is gone takes no new chunk, its connection stays
// open until the chunks in flight on it are acknowledged (at most
// ack_timeout; what is still unacknowledged then is sent to the next
// choice with the same chunk id), and only its partitions move. A lookup
// that fails or finds nothing keeps the addresses the name had, is logged
// and counted as failures_total{reason="resolve"}. Every change is logged
// at info with the addresses added and removed and how many partitions
// moved.
//
// # Shared key
//
// With shared_key, every connection starts with the server's HELO, the
// output's PING and the server's PONG. When the HELO carries an auth salt
// the PING holds username and hex(sha512(salt + username + password));
// without a configured username it holds an empty one and the digest of
// empty strings, as Fluent Bit's out_forward does (Fluent Bit's in_forward
// sends a salt even when it has no users), and the server decides.
//
// # Metrics
//
// Besides the runner's per-output counters (events, bytes, retries):
// logship_forward_out_acks_total, logship_forward_out_ack_latency_seconds,
// logship_forward_out_inflight_chunks and
// logship_forward_out_resolved_servers (the addresses it sends to) per
// component;
// logship_forward_out_connects_total, logship_forward_out_server_up and
// logship_forward_out_failures_total (by reason: connect, tls, auth,
// handshake, write, read, ack_timeout, resolve) per component and server
// (a resolved address; for resolve, the configured name). The series of an
// address that left are deleted.
package forward
