// Package file is the file output: every event as one JSON object per line,
// appended to a file. Parent directories are created.
//
//	outputs:
//	  - type: file
//	    match: "**"
//	    path: ./out/all.log
//	    tag_key: tag     # optional
//	    time_key: time   # optional
//	    fsync: false     # fdatasync after every batch
//
// # Exactly once
//
// Every event the buffer holds is in the file once, with no torn line, even
// if the process is killed (SIGKILL) at any moment; with fsync: true also
// across a power cut. Without fsync a power cut can take back the end of
// the file (what the buffer's cursor already moved past is then lost from
// the file, never written twice).
//
// The output keeps a state file, DataDir/output/NAME/file.state, written
// after every batch, before Write returns and so before the runner commits
// the buffer's cursor past the batch. It says which file the output writes
// (device and inode), how long that file was after the last batch written,
// and for every partition the epoch and the next offset (offset+1) of the
// last batch written. On Start the output cuts the file back to the
// recorded length when it is the same file and longer: what is past it is a
// batch torn by the kill, or one written whose state write the kill beat;
// both are read again from the buffer, since their cursor never moved past
// them. A batch the runner delivers again (cursors are persisted every
// 250ms) is skipped and counted under duplicates_suppressed_total when the
// state says it was written: its offset is below the partition's next
// offset and its epoch is the recorded one or an older one of the same
// buffer incarnation (offsets are never reused within an epoch, and epochs
// only grow along a partition's log; see package broker). A batch of a newer
// epoch, or of another incarnation (a recreated buffer), is written.
//
// A file that is shorter than recorded (a power cut without fsync) is
// logged and left as it is; a file with another inode (renamed away while
// logship was stopped) is not touched. Without a DataDir (tests) the state
// is kept in memory only, and the output is at-least-once across restarts.
//
// # State file format
//
// The state file is two slots of S bytes each (S = file size / 2, a
// multiple of 512), A at 0 and B at S. A state is written with one pwrite
// into one slot: sequence number n goes to slot n%2, so a torn write spoils
// only the slot being written and the other still holds the previous
// state. On open, the valid slot with the highest sequence number wins; with
// no valid slot the output starts without state (and logs it). A slot, all
// integers little-endian:
//
//	 0 magic "LSFO" | 4 version u16 (1) | 6 reserved u16 | 8 partitions u32 (P)
//	12 reserved u32 | 16 sequence u64 | 24 device u64 | 32 inode u64
//	40 length u64 (bytes of the file after the last batch)
//	48 P x (epoch u64, next offset u64)
//	48+16P CRC-32C (Castagnoli) of bytes [0, 48+16P), u32
//
// The rest of a slot is zero. When P outgrows the slots the file is written
// again with larger ones (temporary file, fsync, rename, fsync of the
// directory); that happens once per growth, never per batch.
//
// # Rotation
//
// A reload (SIGHUP) calls Reopen on a kept file output (pipeline.Reopener):
// if the path now names another file (logrotate renamed it away), the output
// opens or creates the file at the path, writes its identity to the state
// and writes the next batches there. With copytruncate the inode stays and
// the recorded length follows the file's real end.
package file
