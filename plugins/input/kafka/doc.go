// Package kafka is the kafka input: a member of a Kafka consumer group
// that turns messages into events and commits their offsets only once the
// events are durable in the local buffer.
//
//	inputs:
//	  - type: kafka
//	    brokers: [127.0.0.1:9092]
//	    topics: [ingest]        # or topic_regex: '^logs\.'
//	    group: logship
//	    format: json            # json | msgpack | raw
//	    tag: "{topic}"          # when a message has no tag header
//
// # Events
//
// Each message becomes one event. Its record is the value decoded by
// format: json (a JSON object), msgpack (a map, what the kafka output
// writes with format msgpack) or raw ({key: VALUE}, key being "log" by
// default). A value that does not decode as the format says is never
// dropped: it is kept raw and counted in
// logship_kafka_in_undecoded_records_total{reason="bad_json"|"bad_msgpack"}.
// The event time is the message timestamp (milliseconds; now for a message
// without one). The tag is the value of the header tag_header ("tag", as the
// kafka output writes it), else the tag template rendered with the topic
// ({topic}, {topic[N]}) and the record's fields ({record.a.b|default}),
// else the topic.
//
// # Delivery
//
// Nothing is lost, and, in logship (whose pipeline keeps source
// positions), nothing is stored twice by one process across a kill:
//
//   - Consecutive messages of one partition with one tag make a chunk
//     (batch.max_events, batch.max_bytes). The input emits it and keeps it
//     until the buffer says it is durable; a chunk the buffer did not store
//     is emitted again after a pause (100ms doubling to 10s), a chunk
//     refused for good (a filter's permanent error) is dropped and counted.
//   - Per partition, the offset after the longest run of durable chunks is
//     marked, and committed to the group every commit_interval, when a
//     rebalance takes partitions away, and at stop. Chunks of one partition
//     may become durable out of order (different tags go to different buffer
//     partitions); the commit never passes one that is not.
//   - Each chunk also stores its partition range (topic, partition, the end
//     of the previous chunk, its own end) in the same buffer record as its
//     events (pipeline.Positions). After a kill, the ranges stored since the
//     last commit are read back at start, and a partition assigned to the
//     process again resumes past its committed offset, over every range
//     that continues it: what was stored is not read again, and a range
//     after a chunk that never became durable does not count, so nothing
//     is skipped. The buffer floor taken before each commit is kept in
//     DATA_DIR/input/NAME/positions.json, so that only the records after it
//     are read back. A partition the group never committed an offset for
//     anchors the chain at its log start (start_offset earliest; with
//     latest it is read from the end). Exactly once into the buffer, then,
//     with one limit: a partition another member takes over after the kill
//     starts at the committed offset, so that member stores again what
//     this one stored after its last commit (at most commit_interval's
//     worth). An offset reset by an operator (to replay) takes effect as
//     usual after a clean stop, which saves the floor past every position.
//   - With an emitter that keeps no positions, a process killed between two
//     commits reads what it stored since the last one again: at least once.
//
// Rebalancing is cooperative (the cooperative-sticky assignor): a member
// that joins or leaves moves only the partitions that must move, and the
// others keep consuming. A member giving partitions up stops emitting for
// them, waits up to revoke_timeout for their chunks on the way into the
// buffer and commits them first, so the new owner starts where it stopped
// and reads nothing twice (0 of 30000 messages in the test with a member
// joining and another leaving under load; 997 when revoke_timeout is too
// short to wait for a slow buffer). Rebalances wait for the batch the input
// is emitting; if the buffer blocks it, the batch is cut short and the
// messages not emitted are fetched again.
//
// Messages are read with isolation read_committed: what a transactional
// producer aborted is never read, and what it has not committed yet waits.
//
// A loop buffer -> Kafka -> buffer (the kafka output feeding this input,
// in another process or tier) is effectively once only when both hops
// are: this one with positions (above), and the output's, which is at
// least once (a kill between Kafka's acknowledgement and the cursor's
// persistence sends a chunk again, with the same event_id headers) until
// it writes with transactions. Without positions the hop into the buffer
// adds the duplicates of every kill.
//
// # Backpressure and memory
//
// While the buffer is full, Emit blocks and the input fetches nothing more.
// The chunks emitted and not durable yet are kept for a retry, at most
// max_pending_bytes (plus one chunk): above it the input stops fetching
// until acknowledgements free space. Beyond that the client holds at most
// one fetch (fetch_max_bytes) per broker.
//
// # Metrics
//
// logship_kafka_in_records_total and _bytes_total (message values) per
// topic; logship_kafka_in_lag_records per topic (the high watermark at the
// last fetch minus the durable offset, summed over the partitions this
// member owns); _commit_errors_total; _partitions_revoked_total;
// _revoked_pending_chunks_total (chunks a revoke could not wait for);
// _undecoded_records_total by reason; and the pipeline's records_in_total,
// errors_total{reason="fetch"|"not_stored"} and dropped_records_total.
package kafka
