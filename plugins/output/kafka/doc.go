// Package kafka is the kafka output: it produces one Kafka message per
// event, through franz-go, and moves the buffer's cursor past a chunk only
// once Kafka acknowledged every message of it (as acks asks).
//
//	outputs:
//	  - type: kafka
//	    match: "app.**"
//	    brokers: [kafka-0:9092, kafka-1:9092]
//	    topic: logs.{tag[1]}       # fixed, or a template (internal/template)
//	    key: user_id               # a record field: the Java client's partition
//	    format: json               # json | msgpack
//	    compression: zstd          # zstd | lz4 | snappy | gzip | none
//	    acks: all                  # all (idempotent producer) | 1 | 0
//
// # Messages
//
// The value is the record as JSON (format json, one object as the file
// output writes it, with tag_key and time_key) or as msgpack (format
// msgpack, the record map as stored). The timestamp is the event time. Two
// headers: tag, the event's tag, and event_id, a stable id per event that
// consumers can dedupe on: the lowercase hex of sender(6) | epoch(8) |
// partition(2) | offset(8) | index(4), where sender is six random bytes
// kept in data_dir/output/NAME/sender-id, epoch, partition and offset say
// where the chunk sits in the buffer, and index is the event's place in
// the chunk. A chunk produced again (after a crash, a restart, or a retry
// after Kafka lost an answer with acks 1) carries the same ids.
//
// Keyed messages go to the partition the Java client picks (murmur2 of the
// key, kgo.StickyKeyPartitioner); unkeyed ones stick to a partition per
// batch and move on, spreading evenly.
//
// # Delivery
//
// WriteAsync produces every message of a chunk and reports the chunk done
// once every promise returned. A message Kafka refuses for good (too large,
// invalid record or timestamp, a template that renders an invalid topic)
// is dropped, counted as dropped_records_total{reason} and logged at most
// once a minute per reason; the rest of the chunk is delivered. A batch the
// broker refuses as too large is split: each message is tried alone and
// only one too large by itself is dropped. Anything else (outage, leader
// change, missing templated topic) is retried by the client for
// delivery_timeout, then by the output with a backoff, for as long as it
// takes: the events wait in the buffer, never lost.
//
// # Exactly once
//
// With exactly_once: true (and acks: all) a SIGKILL at any moment leaves
// every event in Kafka once for read_committed consumers. Each buffer
// partition P has a transactional producer of its own, with the
// transactional id logship-out.NAME.SENDER.P (SENDER: the hex sender id),
// and a worker that takes the partition's batches in offset order. For a
// group of batches (those that arrive within linger, up to max_in_flight)
// it begins a transaction, produces their messages, adds to the same
// transaction a consumer-group offset commit in the group named like the
// transactional id (AddOffsetsToTxn, TxnOffsetCommit): offset = the last
// batch's buffer offset+1 on partition 0 of progress_topic (topic by
// default), metadata "logship/1 epoch=E partition=P" with its buffer
// epoch; then it commits the transaction. Only then are the batches done,
// and may the runner's cursor move.
//
// A worker's first step, and its first after any failure, is to
// initialize its producer, which fences an older one with the same
// transactional id (Kafka aborts the transaction a killed process left
// open: read_committed consumers never see its messages), and to read the
// committed progress back (OffsetFetch with require_stable, so a commit
// still completing is waited for). A batch the progress covers is skipped
// and its events counted as duplicates_suppressed_total: it was committed
// before a kill beat the cursor's persistence (every 250ms). The rule is
// the file output's: the offset is below the committed next offset and
// the epoch is the committed one, an older one of the same buffer
// incarnation, or 0; a newer epoch or another incarnation is produced.
// Any failure in a transaction aborts it and produces its batches again
// in a new one, after a backoff (retry_min to retry_max); a message Kafka
// refuses for good is dropped as without exactly_once (one of a batch
// refused as too large is found by producing the batch's messages one at
// a time in the next transaction). A group whose messages were all
// dropped commits nothing.
//
// # Metrics
//
// Besides the runner's per-output counters: logship_kafka_out_produce_latency_seconds,
// logship_kafka_out_produce_errors_total{reason},
// logship_kafka_out_records_total{topic} and logship_kafka_out_bytes_total{topic}.
//
// docs/kafka.md has the delivery levels side by side and the template syntax.
package kafka
