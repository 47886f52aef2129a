// Package file is the file output: every event as one JSON object per line,
// appended to a file. Parent directories are created.
//
//	outputs:
//	  - type: file
//	    match: "**"
//	    path: ./out/{tag}.log  # or a fixed path: ./out/all.log
//	    max_open_files: 256    # a templated path's open files (LRU)
//	    tag_key: tag           # optional
//	    time_key: time         # optional
//	    fsync: false           # fdatasync after every batch
//
// # Templated paths
//
// The path may use the template syntax of package internal/template:
// {tag}, {tag[N]}, {record.FIELD|default}. A batch is one tag, so a path
// with tag variables only sends a batch to one file, with one write(2). A
// path with record fields splits a batch: its events are grouped per file,
// in order, one write(2) per file, and the state is stored once, after all
// of them (see below: a kill in between cuts every file back).
//
// A rendered path must stay inside the directory part of the text before
// the first variable (./out/{tag}.log: ./out; {tag}.log: the working
// directory): a '..' element written by a variable, an absolute path from
// a variable, a path that names that directory itself or ends in '/', a
// NUL byte or more than 4096 bytes is refused. So is a path that cannot be
// a file (a file in the way of a directory, a directory at the path). The
// events refused are dropped and counted under
// dropped_records_total{reason="invalid_path"}, with a log line at most
// once a minute; the rest of the batch is written. A fixed path is used
// as it is.
//
// At most max_open_files files are open: before another is opened, the
// least recently written one is closed (never one the batch being written
// uses, so a batch naming more files holds them all open until it is
// written). A closed file is opened again, appending, when an event goes
// to it again.
//
// # Exactly once
//
// Every event the buffer holds is in its file once, with no torn line,
// even if the process is killed (SIGKILL) at any moment; with fsync: true
// also across a power cut. Without fsync a power cut can take back the end
// of a file (what the buffer's cursor already moved past is then lost from
// the file, never written twice).
//
// The output keeps a state file, DataDir/output/NAME/file.state, written
// after every batch, before Write returns and so before the runner commits
// the buffer's cursor past the batch. It names every open file (its path,
// device and inode, and its length after the last batch written to it),
// and for every partition the epoch and the next offset (offset+1) of the
// last batch written. A file is named in the state, with its length when
// opened, before anything is written to it; it leaves the state when it is
// closed, everything in it covered by the partitions' offsets.
//
// On Start the output cuts every file the state names back to its
// recorded length when it is the same file and longer: what is past it is
// a batch torn by the kill, or one written whose state write the kill
// beat; both are read again from the buffer, since their cursor never
// moved past them. A batch the runner delivers again (cursors are
// persisted every 250ms) is skipped and counted under
// duplicates_suppressed_total when the state says it was written: its
// offset is below the partition's next offset and its epoch is the
// recorded one or an older one of the same buffer incarnation (offsets are
// never reused within an epoch, and epochs only grow along a partition's
// log; see package broker). A batch of a newer epoch, or of another
// incarnation (a recreated buffer), is written.
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
//	 0 magic "LSFO" | 4 version u16 (2) | 6 reserved u16 | 8 partitions u32 (P)
//	12 files u32 (F) | 16 sequence u64
//	24 P x (epoch u64, next offset u64)
//	then F x (device u64, inode u64, length u64, path length u32 (L), L bytes of path)
//	then CRC-32C (Castagnoli) of all the bytes before it, u32
//
// The rest of a slot is zero. When the record outgrows the slots the file
// is written again with larger ones (temporary file, fsync, rename, fsync
// of the directory); that happens once per growth, never per batch.
//
// Version 1 (older logship) has one file without its path: device,
// inode and length at 24, 32 and 40, the partitions from 48, then the CRC.
// It is read as the state of the configured fixed path; the next state is
// written as version 2.
//
// # Rotation
//
// A reload (SIGHUP) calls Reopen on a kept file output (pipeline.Reopener):
// for every open file whose path now names another file (logrotate renamed
// it away), the output opens or creates the file at the path, writes its
// identity to the state and writes the next batches there. With
// copytruncate the inode stays and the recorded length follows the file's
// real end.
package file
