// Package tail is the tail input: it follows files on the host, Kubernetes
// container logs above all, and turns their lines into events, without
// losing or repeating lines around rotation.
//
//	inputs:
//	  - type: tail
//	    tag: kube.*                 # '*' becomes the path: kube.var.log.containers.a.log
//	    paths: [/var/log/containers/*.log]
//	    exclude_paths: ["*_kube-system_*"]
//	    format: cri                 # none | json | cri | docker
//	    read_from_head: false
//	    path_key: file
//
// # What a record looks like
//
//   - none: {"log": LINE}. json: the line's JSON object (a line that is not
//     one is kept as {"log": LINE}, never dropped). Objects and arrays may
//     nest 128 levels deep, the line's object included; a line nested
//     deeper is kept as {"log": LINE} too, so parsing stays linear in the
//     line's length and no output gets a record deeper than that. Such
//     lines are counted in logship_tail_unparsed_lines_total{reason}
//     (invalid, too_deep), as are cri and docker lines that do not parse.
//   - cri: {"log": MESSAGE, "stream": "stdout"|"stderr"} with the event time
//     taken from the line; partial (P) lines are merged with the lines that
//     follow, per stream, up to the final (F) one.
//   - docker: the same from Docker's json-file driver; the 16KiB pieces
//     Docker writes for long messages (a "log" without its trailing newline)
//     are merged, and the trailing newline is dropped.
//   - path_key adds the file's path. The field name "log" is key.
//   - A line (or merged cri/docker message) longer than max_line_bytes is
//     cut into records of at most that size; every piece carries
//     "split": true except the last, which carries "split": false. A long
//     line never stops a file. A multiline group that would grow past the
//     limit is emitted as it is and the line starts the next group.
//   - A last line without its newline waits for it, at most
//     partial_flush_timeout, and is then emitted as it is.
//
// Lines are read in blocks of read_buffer_bytes and encoded straight into
// the chunk as msgpack entries, with no copy or allocation per line. A
// chunk holds lines of one file only: up to batch.max_events events and
// batch.max_bytes of entries (a single larger event goes alone). The
// event time is the time the block was read (for cri and docker, the time
// written in the line). The chunk is built in memory of the buffer's pool
// and handed over with it (pipeline.Chunk.Own): the buffer keeps it for
// the outputs reading right behind its writer, which take the entries
// from memory instead of reading them back from the buffer's files.
//
// # Delivery: identity and checkpoints
//
// A file is known by its device and inode plus a fingerprint: a hash of its
// first 256 bytes (of fewer while it is shorter; the fingerprint grows with
// the file). Inode numbers are reused once a deleted file is closed, so an
// inode whose first bytes changed is a new file. A position in a file is
// known by its offset plus a hash of the 256 bytes before it (fewer near
// the start): a file truncated and written again with the same first bytes
// (a fixed header, a generated file, a copy put back) and grown past the
// position has other bytes there, and is read again from 0 rather than
// from the old offset, which would skip its first lines.
//
// The checkpoint of a file is its identity and the offset after the last
// line of the last chunk that is durable in the buffer. It moves only in
// the ack callback of a chunk, and only once that chunk and every earlier
// chunk of the same file were acknowledged (acks may come out of order). A
// chunk the buffer did not store (an ack with an error) makes the file be
// read again from its checkpoint, with a growing pause, as long as the
// error may pass (a full disk, a stop). A permanent error (Emit or the
// ack returns an error for which pipeline.IsPermanent holds, or
// broker.ErrTooLarge) means those events can never be stored: they are
// dropped on purpose, counted in
// logship_dropped_records_total{reason="permanent_error"}, logged (at most
// every 10s per file), and the checkpoint moves past them as if they
// were stored, so the file is never read again in a loop. Checkpoints
// are written every 200ms when they changed, at stop, and at once when a
// file is found or its content is replaced, to
// DATA_DIR/input/NAME/checkpoints.json (JSON: per file dev, ino, fp_len,
// fp, offset, tail_len, tail_fp (the hash of the bytes before offset),
// path and sum, a checksum of the entry; beside the entries, buffer_floor
// and origins, below): a temporary file,
// fsync, rename, fsync of the directory, so the file on disk is always a
// whole, older-or-current version. It never skips a line. A message still
// being assembled (a partial cri/docker message, a multiline group) holds
// the checkpoint at its first line.
//
// # Exactly once into the buffer, across SIGKILL
//
// Each chunk also carries, as its pipeline.Chunk.Source, what its file's
// checkpoint becomes once it is durable (source.go: a version byte, then
// device, inode, fingerprint, the chunk's start and end offsets, the hash
// of the bytes before the end, the path, and the chain it belongs to);
// the buffer stores it in the same record as the chunk's last events, so
// the position is durable exactly when the data is. Every save of
// checkpoints.json first takes the emitter's pipeline.Positions.Floor and
// stores it as buffer_floor (one offset per buffer partition): every chunk
// whose ack the saved entries lack is at or after it. At Start, before any
// file is opened, the sources stored from the floor on are read back
// (Positions.Sources) and applied over the checkpoints, so a process killed
// with SIGKILL reads nothing again that the buffer holds, and skips
// nothing: the log line "positions recovered from the buffer: N files, M
// bytes not read again" and logship_tail_positions_recovered_bytes_total
// and _lines_total say what that saved.
//
// A source is applied only where it continues a position known to be
// durable. A chain is one reading of one content of a file: it begins when
// a file is opened at an offset, when a truncation starts it over at 0, or
// when a copy resumes where its original stopped; it gets a number from
// the input's sequence (saved per entry in origins), and so does every
// source, so that the sources of several partitions are applied in the
// order they were made. A source names the offset its chunk starts at (the
// end of the chain's previous chunk): one whose earlier chunk never became
// durable (the chunk was refused and the file read again from its
// checkpoint, its successors' acks disowned) leaves a gap and is ignored,
// as are sources of an older chain (a content truncated away, a tailer
// closed and its file opened again); a newer chain is taken from its first
// chunk only. A truncation saves checkpoints.json before the new content's
// first chunk (if that save fails, that content's chunks carry no source),
// so a source of the new content never hides the old content's copy. The
// position recovered then goes through the same checks at open as a
// checkpoint (fingerprint, the bytes before the offset, the size): a file
// rotated away is found by inode in its directory and read from there, one
// deleted has its checkpoint dropped, one rewritten is read from its start.
//
// What stays at-least-once: a chunk dropped for good by a permanent error
// reported in its ack (not by Emit) leaves a gap, so after a kill the file
// is read again from before it; a checkpoint file that cannot be trusted,
// or a source that does not decode (another version, a damaged record:
// never trusted, only counted in the log line), falls back to the
// checkpoints; a chunk the buffer refused and that was read again may be
// stored twice, as before. An emitter that keeps no positions (one that is
// not a pipeline.Positions) gets chunks without a Source, and a kill reads
// again the lines acknowledged after the last save (about 200ms' worth) as
// it always did. A checkpoint file without buffer_floor (written by an
// older logship) makes the next start read every record the buffer holds
// for the sources: slower once, as exact. buffer_floor and origins are
// fields older versions ignore (the entries and their sums are unchanged),
// so the format stays version 1 both ways.
//
// A checkpoint file that cannot be trusted (a directory, unreadable, not
// JSON, cut short by a write the file system did not keep, an unknown
// version, an entry whose sum is wrong; or DATA_DIR/input/NAME is a file)
// does not stop the input. It is renamed to
// checkpoints.json.corrupt-TIMESTAMP (NAME.corrupt-TIMESTAMP for the
// directory; kept for a post-mortem),
// logged at error level with both paths, and counted in
// logship_tail_checkpoint_corrupt_total and
// logship_errors_total{reason="checkpoint_corrupt"}. The entries that can
// be trusted (whole, with a right sum, before the damage) are used; every
// other file is read from its first line, whatever read_from_head says:
// lines shipped before are shipped again rather than skipped. A file
// rotated away while logship was stopped and whose entry was lost is not
// found again, and ignore_older still skips old files.
//
// On start, a file whose checkpoint matches (inode, fingerprint and the
// bytes before the offset) resumes at the checkpoint; one whose content
// changed starts at 0. A file with the same first bytes but other bytes
// before the offset is logged ("file rewritten while logship was
// stopped") and counted in logship_tail_rotations_total{kind="rewritten"}.
// A checkpoint written before the tail hash existed is resumed on inode
// and fingerprint alone, as before. Without a
// checkpoint, read_from_head decides for the files found at the very first
// start only; files that appear later are read from their first line,
// including those created while logship was stopped (modified after the
// last checkpoint save), so a restart does not lose a new container's
// first lines.
//
// # Rotation
//
//   - rename and create (logrotate's default, kubelet): the file is followed
//     by its open descriptor, not its name. Once no matched name leads to it,
//     it is read to its end, followed for rotate_wait more (writers that
//     have not reopened yet), read to its end again and closed; the new file
//     under the name is read from its first line. A file renamed while
//     logship was stopped is found again by inode and fingerprint in its
//     directory and read from its checkpoint to its end.
//   - copytruncate: the original shrinks (or its first bytes change) and is
//     read again from 0. The copy has the original's fingerprint: if it is
//     matched by paths it is not read again but resumes where the original
//     stopped; if it is not (app.log.1 next to app.log), it is looked for in
//     the directory and read from there to its end, under the original's
//     name, so the lines written just before the truncation are not lost.
//     Chunks of the original still in flight are waited for first, so one
//     the buffer refuses is read again from the copy. A matched copy of a
//     file shorter than 256 bytes cannot be told from a new file and is
//     read again. A copy must also hold the 256 bytes before the offset it
//     resumes at (when it is long enough to; always for a rotation found at
//     start-up), so a file that merely starts like the original (a fixed
//     header) is read from its start, not taken for the copy.
//   - truncation in place: the file is read again from 0. What it held past
//     the read position is lost and counted. A truncation followed at once
//     by more writes than the file held is noticed too: before each read
//     the bytes before the read position are checked against those read.
//   - deletion while open: the descriptor keeps the data; the file is read
//     to its end (and followed for rotate_wait) before it is closed.
//   - a file that reappears under a matched name is a new file (or, if it
//     is the same inode and content moved back, it continues).
//
// The loss ledger, logship_tail_lost_bytes_total{path,reason}, counts what
// could not be read: a file that vanished between discovery and open, and
// bytes of a truncated file past the read position that no copy held.
//
// # Discovery and notifications
//
// The paths are globbed every refresh_interval. Their directories (and
// those of symbolic link targets) are watched with inotify, through
// github.com/fsnotify/fsnotify: a write wakes the file's reader at once, a
// new or removed name triggers a scan. Every open file is also checked
// every refresh_interval whatever inotify says: events are lost when the
// kernel queue overflows and never come on some file systems (NFS, some
// overlay setups), so polling is the safety net, not the mechanism.
//
// # Why github.com/nxadm/tail is not used
//
// nxadm/tail reads lines by path and hands them over without the offset
// and identity of the file they came from, so an exact checkpoint cannot be
// built on it; its issues show lines lost and repeated in rename races
// (nxadm/tail #28, #72, the unmerged #73) and a partial last line skipped
// unless CompleteLines is set. Its watcher package (nxadm/tail/watch) was
// considered for the notifications and does not fit either: the inotify
// watcher adds one watch per file (thousands of files) behind one
// process-wide goroutine that is never stopped, dispatches every event
// through an unbuffered channel per file name (one slow reader holds up
// all), forgets a file after its first rename or deletion, and calls
// os.Exit on a failed stat; the polling watcher runs one goroutine per file
// with a fixed, process-wide 250ms period. This package therefore owns the
// reading, the identity and the checkpoints, and uses fsnotify directly,
// one watch per directory, with polling underneath.
//
// # Resources
//
// Each followed file has a goroutine and a descriptor. Read buffers and
// chunk buffers are shared: only the few files being read at a moment (as
// many as GOMAXPROCS, at least 2) hold one, so memory does not grow with
// the number of files. A busy file yields after a few blocks so that one
// file cannot starve the others. Emit blocks while the buffer is full
// (when_full: block): the reader simply waits, nothing is dropped.
// ignore_older closes files idle for that long; they are opened again,
// at their checkpoint, once written to.
//
// # Metrics
//
// Per file (the series go when the file is closed):
// logship_tail_file_read_bytes_total, logship_tail_file_records_total,
// logship_tail_file_lag_bytes. Per input: logship_tail_files_open,
// logship_tail_rotations_total{kind} (gone, deleted, truncated, renamed,
// copy, rewritten), logship_tail_rewinds_total, the loss ledger above,
// logship_tail_checkpoint_corrupt_total,
// logship_tail_positions_recovered_bytes_total and _lines_total (what the
// buffer's positions spared at start) and
// logship_tail_unparsed_lines_total{reason} (invalid, too_deep). Events
// dropped on a permanent error are in the pipeline's
// logship_dropped_records_total{reason="permanent_error"}.
package tail

// For maintainers: where each job lives, and the locks.
//
// The package is split the way OpenTelemetry Collector's
// pkg/stanza/fileconsumer is (finder and matcher, tracker, reader,
// fingerprint, checkpoint), but in files of one package: most jobs are
// methods of the same two types, Input and tailer, and share their state
// under their locks, so sub-packages would need exported fields or
// callbacks between them. Identity and the checkpoint store are the
// cleanest seams if that is ever wanted.
//
//	tail.go         Input: New, Start, Stop, the manager loop, warnOnce
//	config.go       Config, its defaults and Validate
//	discovery.go    discovery and watching: globs, exclude_paths, scan,
//	                inotify watches and events, wake-ups
//	files.go        the followed files: open, where a found file starts
//	                (decideStart), tracked, untrack, the tag
//	tailer.go       one file's goroutine: run, waits, deadlines, retire,
//	                ignore_older
//	reader.go       reading blocks (a read slot, a pooled buffer), cutting
//	                lines and over-long lines, flushing what waited too long
//	chunk.go        a message as a msgpack entry of the chunk; the chunk's
//	                limits (batch.*) and its checkpoint offset
//	format.go       cri and docker lines, streams, partial-message merging
//	multiline.go    multiline.start_regex groups
//	jsonmp.go       JSON to msgpack, docker json-file lines, RFC 3339 times
//	identity.go     file identity: device and inode, head fingerprint, the
//	                hash of the bytes before an offset (identity_unix.go,
//	                identity_other.go: device, inode, link count per OS)
//	rotation.go     gone and deleted files, truncation and rewrite
//	                detection, copytruncate copies, files rotated while
//	                stopped
//	ack.go          emitting chunks, pending chunks and their acks,
//	                permanent errors, rewind, the in-flight count for Stop
//	checkpoint.go   the checkpoint store and checkpoints.json: opening it
//	                (a corrupt file set aside), saving it with the floor
//	source.go       the position stored with each chunk (Chunk.Source),
//	                chains, and applying them over the checkpoints at Start
//	metrics.go      the tail_* metrics
//
// Goroutines: the manager (Input.loop: scans, polls, saves), the inotify
// reader (Input.watch), one per followed file (tailer.run), and the
// buffer's, which calls tailer.acked.
//
// Locks, in the order they nest: while holding one, only a lock to its
// right is taken.
//
//	Input.mu -> tailer.mu -> store.mu
//
//   - Input.mu (the followed files, the truncation records, warnOnce's set,
//     per-path metric refs). Held while taking a tailer's mu (scan calls
//     setGone; noteTruncation and liveWithFingerprint look at every
//     tailer) and while calling store.del (scan forgets checkpoints).
//   - tailer.mu (one file's identity, pending chunks, committed offset,
//     gone/retired state). Held while calling store.set (acked,
//     checkTruncated). Never two tailers' at once; never held while taking
//     Input.mu: resolveCopy, checkTruncated, retire and idleClose release
//     it first.
//   - store.mu, a leaf. store.saveMu is taken before it (save) and with
//     no other lock held; save calls the emitter's Floor (which locks
//     inside the pipeline) holding saveMu only, before it takes store.mu.
//     checkTruncated saves (a truncation) with none of ours held.
//   - Input.ackMu (the in-flight count), a leaf taken with no other lock
//     held.
//
// The metrics and the rate-limited logger lock inside and are leaves too.
// No lock of this package is held across Emit (the ack may run before
// Emit returns, and Emit blocks while the buffer is full), across a read
// of a followed file, or across the checkpoint file's write (saveMu
// aside).
