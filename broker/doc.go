// Package broker is logship's durable partitioned log: the buffer between
// inputs and outputs.
//
// An input appends whole chunks (one tag, a run of msgpack [time, record]
// entries that the broker never decodes) with Append or AppendAsync and
// learns when the chunk is durable. Every output reads each partition through
// its own named Cursor and commits what the receiver accepted. A segment is
// deleted once every cursor has passed it.
//
// # Directory layout
//
// Open(dir) owns dir (e.g. DATA_DIR/buffer):
//
//	dir/LOCK                             flock(2)ed exclusively while a Broker is open
//	dir/META                             format version, incarnation, epoch, clean marker (see Epochs)
//	dir/p0000/                           partition 0
//	dir/p0000/00000000000000000000.seg   segment whose first record has offset 0
//	dir/p0000/00000000000000004711.seg   next segment, base offset 4711
//	dir/p0000/cursors/forward.0.cur      cursor "forward.0" of partition 0
//	dir/p0001/...
//
// Segment files are named by the offset of their first record, in decimal,
// zero-padded to 20 digits, so that a lexical sort is the log order. A
// cursor file is named by its cursor name with every byte outside
// [A-Za-z0-9_.-] (and a leading '.') written as %XX; partition-local cursor
// files keep every partition directory self-contained.
//
// # Offsets
//
// Record offsets are per-partition logical sequence numbers 0, 1, 2, ...
// assigned in append order. Within a partition offsets strictly increase
// from one record to the next and are normally contiguous; a gap appears only
// where recovery skipped corrupted records, a repair replaced them by a
// lost marker, or records are missing (a truncated or missing segment; see
// below). A segment's base offset is its first offset; its end is the next
// segment's base offset (or, for the last segment, the partition's next
// offset). An offset is reused only after the records that had it were lost
// (a power cut took an unsynced tail, a last segment was damaged, the
// buffer was recreated), and then in a new epoch.
//
// # Segment file
//
// A segment starts with a 32-byte header, then frames back to back, no
// padding. All integers are little-endian.
//
//	header: 0 magic "LSHPSEG\x00" | 8 version u16 (=2) | 10 flags u16
//	        (bit 0: reused, see Segment reuse; other bits 0)
//	        12 partition u32 | 16 base offset u64 | 24 reserved u32
//	        28 CRC32C of bytes [0,28)
//
//	frame:  0 magic u32 (0x52534CF7) | 4 CRC32C of bytes [8, 32+length)
//	        8 length u32 (tag + entries) | 12 count u32 (events in entries)
//	        16 offset u64 | 24 tag length u16 | 26 flags u16 | 28 epoch u32
//	        32 tag bytes | entries bytes
//
// Version 2 segments differ from version 1 only in the frame's u32 at 28:
// the epoch the frame was written in (see Epochs), covered by the CRC like
// the rest of the header. Version 1 wrote 0 there; version 1 segments are
// read as they are (their records have epoch 0) and never appended to: at
// Open a version 1 last segment is sealed and a version 2 one started (an
// empty one gets a version 2 header instead). The cursor file format is
// unchanged (version 1).
//
// Flag 2 (meta) says the payload is tag | meta length u16 | meta | entries
// instead of tag | entries: the appender's meta (AppendAsyncMeta, at most
// MaxMetaBytes), such as an input's source position, durable exactly when
// the entries are. The length field counts the meta section too. Frames
// with flag 2 are written since META version 3, which a logship that does
// not know the flag refuses to open (it would take them for corrupted
// frames).
//
// The CRC (Castagnoli) covers everything in the frame after itself, so a
// torn, truncated or flipped frame is detected, and so is a frame whose
// offset or length was altered. Flag 1 (lost) marks a frame written by
// "buffer check --repair": it has no payload and says that count offsets
// starting at offset were lost to corruption; readers skip it.
//
// A segment is append-only: frames are written with one pwritev(2) per group
// of concurrent appenders at the segment's current end, and never rewritten
// in place by a running broker (a reused file is written over once, from
// its start, as a new segment: see Segment reuse). A segment is sealed when the next one is
// created (with its header). With SyncAlways and SyncInterval the sync
// goroutine fdatasyncs the sealed segment and fsyncs the directory before
// it acknowledges any record after them; the writer never waits for it.
//
// # Segment reuse
//
// With WithSegmentReuse (the default), retention keeps the oldest segment
// it deletes, when the partition has none kept and the segment is at least
// half a segment and no reader has it open, renamed to
// dir/pNNNN/<offset after its last record>.spare. The next new segment of
// the partition is that file renamed to its name, with a header carrying
// the reused flag, written over from the start: the filesystem allocates
// no block for it, and an fdatasync has no new file size to make durable
// (one device round trip, not two, on ext4). A spare counts in the
// buffer's size and is the first thing deleted when the buffer is full
// (and at Open beyond one per partition).
//
// Past its last record a reused segment holds bytes of its earlier use.
// They are never taken for records: a spare is reused only at a base at or
// above its name's offset, so every frame left in it has an offset below
// the base, and scans take only frames at or after the offset they
// expect. Recovery therefore leaves them after the last valid frame of a
// reused last segment (not cut, not counted as torn); a segment is cut to
// its records when it is sealed; readers stop reading a segment once they
// met every offset below its end. A last segment whose header is an
// intact one of a lower base is a spare renamed whose new header never
// reached the disk: no record of it was acknowledged (the segment's first
// fdatasync covers its header), and Open starts it again, empty, cut to
// nothing (records of it that reached the disk could otherwise come back
// behind shorter appends). Retention renames the spare before it deletes
// the segments after it, so a kill in between leaves the log without a
// prefix, never with a hole. A roll onto a spare first fdatasyncs every
// segment not synced yet (a failure fails the appends waiting for a
// sync), then renames the spare and fsyncs the directory before it writes
// anything into the file: after a power cut no old name holds new
// records, and no new name follows a segment whose end was lost.
//
// # Durability and acknowledgement
//
//   - SyncAlways (the default): an append is acknowledged once an
//     fdatasync that started after its write returned. The sync goroutine
//     starts an fdatasync as soon as an append waits and none is running;
//     every append written while one runs shares the next one (group
//     commit). No timer is involved: a lone appender waits for one
//     fdatasync, never for the sync interval.
//   - SyncInterval: the same, but the sync goroutine fdatasyncs every
//     sync interval (and earlier once 16 MiB are unsynced, which bounds the
//     acknowledgements waiting), so many appends share one fdatasync. A
//     synchronous Append therefore waits up to one interval (200ms by
//     default): the mode is for fewer IOPS with inputs that pipeline
//     (AppendAsync, forward clients with many chunks in flight).
//   - SyncNone: an append is acknowledged once write(2) returned: it
//     survives a process kill, not a power cut.
//
// Readers see only what is acknowledged-durable: under SyncAlways and
// SyncInterval a Cursor returns a record only once the fdatasync covering
// it (and the sealed segments and directory entries before it) completed,
// and Commit refuses offsets beyond that point; so an output never delivers
// a record a power cut can still take back. Under SyncNone a reader sees a
// record once write(2) returned: after a power cut it may be gone, the
// cursor that consumed it is then clamped to the end of the log on the next
// Open, so no later record is skipped, and new records at those offsets
// carry a new epoch (see Epochs).
//
// A cursor right behind the writer may get a record from memory instead of
// the segment (the tail cache, tailcache.go): the very bytes written, from
// memory the appender handed over (AppendAsyncOwned), under the same rule:
// only once the record is durable as above.
//
// # Epochs
//
// An offset names a record only within an epoch: after a power cut lost an
// unsynced tail, or when a buffer is recreated, new records get offsets
// that records already read had. So that (epoch, partition, offset) never
// names two different contents, every record carries the epoch it was
// written in: Record.Epoch = incarnation<<32 | frame epoch, or 0 for a
// record of a version 1 segment (written before epochs; its offsets were
// never reused, and a chunk id made from epoch 0 is the one an older
// logship gave it).
//
//   - The incarnation is a random non-zero u32 (crypto/rand) made when the
//     buffer directory is created, or when its META is missing or
//     unreadable (a buffer written before epochs gets one at its first
//     Open). A recreated buffer therefore yields different epochs too.
//     Records already in a buffer whose META is remade report the new
//     incarnation: their epochs change (a receiver may store them again),
//     they never collide with others.
//   - The frame epoch (the u32 at byte 28 of every frame) is the epoch of
//     the Open that appended it; a record keeps it for good.
//   - A new epoch begins (the counter in META goes up by one, or to one
//     above the highest frame epoch found in a last segment if that is
//     higher) at every Open that does not find the clean-shutdown marker,
//     when the buffer is new, and when a partition may reuse offsets (a
//     partition without a segment file, a cursor committed past the end of
//     the log, a last segment set aside as damaged). A clean Close/Open
//     keeps the epoch.
//   - Close writes the marker (the "clean" line of META) only after the
//     final fdatasync of every partition and the cursor flush succeeded.
//     Open rewrites META without it (temp file, fsync, rename, fsync of the
//     directory) before the first append, so a crash after Open is never
//     taken for a clean stop. If that fails for a full filesystem, Open
//     still succeeds and the writers retry it before their first write,
//     as for any full-disk write (appends wait, Healthy reports it). If
//     the marker cannot be written at Close, that is logged: the next Open
//     begins a new epoch.
//
// META is text:
//
//	logship-buffer 2
//	incarnation 1a2b3c4d
//	epoch 7
//	clean
//
// A logship that reads only version 1 refuses a version 2 META rather than
// take frames with a non-zero epoch for corrupted ones. Should the counter
// reach 2^32-1, the next new epoch comes with a new incarnation.
//
// # Invariants
//
//  1. Nothing is acknowledged that is not stored (durably, per the sync
//     mode). A failed or partial write is cut back (ftruncate) to the last
//     complete frame before anything is retried.
//  2. Every byte of a segment below the published write position is a
//     complete frame; readers never read past it.
//  3. A committed cursor position only moves forward in a running broker.
//  4. A segment is deleted only when every cursor opened since Open has
//     committed past its end, or by the drop_oldest policy (counted, logged
//     with the cursor names that lost data). The last segment of a partition
//     is never deleted.
//  5. Buffer size is the sum of the segment file sizes; appends reserve
//     their frame size before being written.
//  6. Under SyncAlways and SyncInterval no reader sees a record that an
//     fdatasync has not covered (and Commit refuses its offset).
//  7. No two records with different bytes ever have the same (Epoch,
//     Partition, Offset), across crashes, power cuts and recreated
//     buffers.
//  8. An epoch is never reused within an incarnation: a new one is made
//     durable in META before the first record of it is appended.
//
// # Recovery (Open)
//
// Open scans the last segment of every partition frame by frame. A frame
// that does not validate (magic, length within the file, CRC) starts a bad
// span; the scan resynchronises on the next valid frame (magic and CRC
// match, offset greater than the last good one and no more lost records than
// the skipped bytes could hold). If one is found the span is a corrupted
// record in the middle: it is skipped and the lost offsets are counted
// (logship_buffer_corrupted_records_total) and logged. If none is found up to
// the end of the file, the span is a torn tail: the file is truncated after
// the last valid frame. Sealed segments are not read at Open; readers apply
// the same resynchronisation when they meet a bad frame and count each bad
// span once. Readers also count, once per segment, the offsets a sealed
// segment should hold after its last valid frame but does not (it was
// truncated at a frame boundary, or the segment file after it is missing):
// the span from its last record to the next segment's base. A segment
// header that does not validate is counted and the base offset is taken
// from the file name; a last segment shorter than its header gets a new
// header. A header with a valid CRC but an unknown version makes Open fail:
// a newer logship wrote it.
//
// Damage to the directory degrades, it never stops the broker. A path that
// should be a file or a directory and is not (a segment or cursor file that
// is a directory, a partition or cursors directory that is a file, a META
// that is a directory) is set aside, renamed to NAME.damaged-UNIXNANOS, and
// logged. A middle segment set aside is a gap readers count; so is a
// sealed segment that cannot be opened (it is left in place, out of the
// log and of the size accounting, and tried again at the next Open). A
// last segment that cannot be opened or scanned (an I/O error) is set
// aside too. A last segment set aside loses its records: appends continue
// at its base offset (in a new epoch, after the previous segment's
// records), cursors past it are clamped there, and what cursors had
// consumed of it (the highest committed offset minus its base, a lower
// bound of the loss) is counted in logship_buffer_corrupted_records_total.
// A cursors directory that cannot be listed makes every cursor of the
// partition restart at its oldest record. Errors that say the process,
// not the file, is in trouble (EMFILE, ENFILE, ENOMEM, EAGAIN, a full
// disk) never set anything aside: Open fails and may be retried. Open
// fails otherwise only for a newer format, a locked directory, or I/O
// errors that leave nothing to append to (the directory itself, a new
// segment that cannot be created).
//
// Cursor files are hints. A cursor file that cannot be read or does not
// validate is ignored (logged); the cursor then starts at the oldest
// retained offset, which re-delivers rather than loses. A cursor pointing
// past the end of the log is clamped to the end (a new epoch begins), and
// one pointing before the first retained segment is clamped to its base;
// both are logged.
//
// # Health
//
// Healthy returns nil while appends can succeed. A failed write (a full
// filesystem included) or fdatasync makes it return that error until an
// append succeeds again (for SyncAlways and SyncInterval: until an
// fdatasync that started after the error succeeds). The service reports
// not ready (/readyz) meanwhile; appends wait (full filesystem) or fail,
// and nothing is acknowledged that was not stored.
//
// # Partitions
//
// Open creates WithPartitions(n) partitions. A chunk goes to partition
// FNV-1a(tag) % n, so one tag keeps its order. If dir holds more partitions
// than n (the option was lowered) the extra ones are kept read-only: nothing
// is appended to them, Partitions() counts them so outputs drain them, and no
// data is lost; only the order of a tag across the change is not kept.
//
// # Retention and a full buffer
//
// Retention only considers cursors opened in this process (a cursor that is
// closed keeps holding its committed position until RemoveCursor or the next
// Open). If no cursor was opened, nothing is deleted except by drop_oldest.
// When the buffer would exceed max_bytes, FullPolicy decides: Block makes
// appends wait (cancellable by their context) until retention frees space;
// DropOldest deletes the oldest sealed segment (by seal time), moves lagging
// cursors past it and counts the lost records, events and bytes. A full
// filesystem (ENOSPC, EDQUOT) is backpressure too: the partial write is cut
// back, the append waits and retries, and the error is logged rate-limited.
// The segment size is capped at max_bytes/(2*partitions) so that consumed
// data is always in sealed, deletable segments.
//
// # File descriptors
//
// A partition keeps its last segment open; a sealed segment is open only
// while a cursor is reading it. The number of open descriptors is bounded by
// partitions * (2 + open cursors).
//
// # Locks
//
// Where locks nest, they are taken in this order (b is the Broker, p a
// partition, c a Cursor, s a segment):
//
//	p.wmu -> p.fsyncMu -> p.cmu -> b.dropMu -> c.nextMu -> p.mu -> c.mu -> s.fmu
//	      -> p.qmu -> b.metaMu -> b.spaceMu -> p.smu -> p.hmu
//
// A lock may only be taken while holding locks to its left. The pairs that
// actually nest are: p.wmu over p.qmu, b.metaMu, p.mu, s.fmu, b.spaceMu,
// p.smu and p.hmu (the write path), over p.fsyncMu (a roll onto a spare),
// and over p.cmu, p.mu and c.mu in Close; p.fsyncMu over p.mu, s.fmu,
// p.smu, p.hmu and b.spaceMu (a sync, syncNow or syncBeforeRoll);
// p.cmu over p.mu and c.mu (flushCursors, RemoveCursor); b.dropMu over p.mu,
// c.mu, s.fmu and b.spaceMu (dropOldest); c.nextMu over c.mu, p.mu and
// s.fmu (Next, Cursor.Close); p.mu over c.mu and s.fmu. Locks of one kind
// are held for one partition or cursor at a time, except in Close, which
// holds every p.qmu, then every p.wmu, in partition order.
//
//   - p.wmu: the right to write the partition's segments (active, wf and
//     the writer's buffers); held by the writer goroutine or an inline
//     appender, and by Close for good once the writers stopped.
//   - p.fsyncMu: one sync of the partition at a time (the syncer's, or the
//     writer's before a roll onto a spare), held across fdatasync, so that
//     a writeback error, reported once per open file, fails the
//     acknowledgements it concerns; never held while they are delivered.
//   - p.cmu: serialises writing and removing the partition's cursor files.
//   - b.dropMu: one drop_oldest at a time across the broker.
//   - c.nextMu: the reading state of one cursor (seg, pos, buf), held for
//     the whole of Next; Close takes it to release that state.
//   - p.mu: the partition's segment list and the fields of its segments
//     (size, next, sealed, index, bad), next and the durable read limit,
//     the cursor map, the waiting readers (waiters, Cursor.queued),
//     unsyncedSegs and dirDirty.
//   - c.mu: the cursor's committed and read positions, gen, dirty, open,
//     retain and closeCh.
//   - s.fmu: the segment's open file and its reference count.
//   - p.qmu: the queue of appends waiting for the writer.
//   - b.metaMu: one write of META at a time (ensureMeta).
//   - b.spaceMu: the space accounting (used, reserved) and its waiters.
//   - p.smu: the appends waiting for an fdatasync (acks, unsynced, synced).
//   - p.hmu: the partition's health error (herr, hseq).
//
// c.mu, s.fmu, p.qmu, b.metaMu, b.spaceMu, p.smu and p.hmu are leaves: no
// other broker lock is taken while one is held. p.mu, c.mu, p.qmu,
// b.spaceMu, p.smu and p.hmu are never held across a read, write or sync
// of a file, a blocking channel operation or a callback (p.mu covers at
// most the open(2) or close(2) of a segment in s.acquire and s.release).
// Only p.wmu (segment writes, META, the disk-full backoff), p.cmu (cursor
// files), b.dropMu (scanning and deleting the victim), c.nextMu (segment
// reads, and waiting for records: Cursor.Close signals closeCh before it
// takes c.nextMu), b.metaMu (META) and s.fmu (opening and closing the
// file) are held across I/O.
//
// An AppendAsync done func runs on the sync goroutine with no lock held,
// except at Close (every p.wmu held); under SyncNone it runs with p.wmu
// held. So it must not Append, AppendAsync (under SyncNone an AppendAsync
// to the same partition deadlocks: it waits for the writer, which waits
// for p.wmu) or Close. Log messages are written under p.mu and c.mu
// (Cursor, Next), b.spaceMu (a full buffer) and p.wmu.
package broker
