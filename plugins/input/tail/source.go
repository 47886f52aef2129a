package tail

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"go.uber.org/zap"
)

// The position a chunk stores with its events (pipeline.Chunk.Source,
// through pipeline.Positions): what the file's checkpoint is once that
// chunk and every earlier chunk of its chain are durable. After a kill,
// the newest of these per file is newer than checkpoints.json and is
// applied over it at Start, so the lines acknowledged after the last save
// are not read again.
//
// A chain is one reading of one content of a file: it begins (its origin)
// when a tailer starts following a file at some offset, when a truncation
// starts the file over at 0, or when a copy resumes where its original
// stopped. Each origin gets a number from the input's sequence, which also
// numbers every source, so that sources of several buffer partitions are
// applied in the order they were made. A source says where its chunk
// starts (the previous chunk's end, or the origin's offset): it is applied
// only where it continues a position already known, so a source whose
// earlier chunks never became durable (a chunk refused, then the file read
// again) is ignored rather than skipping their lines.
type source struct {
	seq       uint64 // order of emission within the input
	origin    uint64 // the chain: seq taken when it began
	originOff int64  // where the chain began: everything before is accounted for
	key       fileKey
	fp        fingerprint
	start     int64 // the chunk's first byte: the end of the chain's previous chunk
	end       int64 // the checkpoint once the chunk is durable
	tail      tailSum
	count     int    // events in the chunk, for the recovery's report
	path      string // the name the file is read under; "" if too long to store
}

// sourceVersion is the first byte of an encoded source. Another version
// is refused (the file is then read from its checkpoint, as before).
const sourceVersion = 1

// maxSourcePath bounds the path stored in a source, within the pipeline's
// 1 KiB: a longer one is left out (such a source only moves a checkpoint
// that exists).
const maxSourcePath = 800

// appendSource encodes s.
func appendSource(b []byte, s *source) []byte {
	b = append(b, sourceVersion)
	b = binary.AppendUvarint(b, s.seq)
	b = binary.AppendUvarint(b, s.origin)
	b = binary.AppendUvarint(b, uint64(s.originOff))
	b = binary.AppendUvarint(b, s.key.dev)
	b = binary.AppendUvarint(b, s.key.ino)
	b = binary.AppendUvarint(b, uint64(s.fp.n))
	b = binary.LittleEndian.AppendUint64(b, s.fp.sum)
	b = binary.AppendUvarint(b, uint64(s.start))
	b = binary.AppendUvarint(b, uint64(s.end))
	b = binary.AppendUvarint(b, uint64(s.tail.n))
	b = binary.LittleEndian.AppendUint64(b, s.tail.sum)
	b = binary.AppendUvarint(b, uint64(s.count))
	if len(s.path) > maxSourcePath {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(s.path)))
	return append(b, s.path...)
}

var errBadSource = errors.New("not a tail source position")

// decodeSource decodes a source read back from the buffer. Records are on
// disk and may be from another version: anything that does not decode
// whole and within bounds is refused, never trusted in part.
func decodeSource(b []byte) (source, error) {
	var s source
	if len(b) == 0 {
		return s, errBadSource
	}
	if b[0] != sourceVersion {
		return s, fmt.Errorf("%w: version %d, want %d", errBadSource, b[0], sourceVersion)
	}
	b = b[1:]
	bad := false
	uv := func(limit uint64) uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 || v > limit {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	u64 := func() uint64 {
		if len(b) < 8 {
			bad = true
			return 0
		}
		v := binary.LittleEndian.Uint64(b)
		b = b[8:]
		return v
	}
	const maxOff = 1<<63 - 1
	s.seq = uv(1<<64 - 1)
	s.origin = uv(1<<64 - 1)
	s.originOff = int64(uv(maxOff))
	s.key.dev = uv(1<<64 - 1)
	s.key.ino = uv(1<<64 - 1)
	s.fp.n = int(uv(fingerprintBytes))
	s.fp.sum = u64()
	s.start = int64(uv(maxOff))
	s.end = int64(uv(maxOff))
	s.tail.n = int(uv(tailBytes))
	s.tail.sum = u64()
	s.count = int(uv(1 << 31))
	pl := uv(maxSourcePath)
	if bad || uint64(len(b)) != pl {
		return source{}, errBadSource
	}
	s.path = string(b)
	if s.start < s.originOff || s.end < s.start || s.tail.n > 0 && int64(s.tail.n) > s.end || s.origin == 0 || s.seq < s.origin {
		return source{}, errBadSource
	}
	return s, nil
}

// recovery is what the sources found at Start added to the checkpoints.
type recovery struct {
	sources int   // sources read back
	refused int   // records that did not decode
	files   int   // checkpoints moved or made
	bytes   int64 // bytes the checkpoints moved past: not read again
	lines   int   // events of chunks wholly past the saved checkpoints
	maxSeq  uint64
}

// applySources applies srcs, in seq order, over the checkpoints m (those
// loaded from checkpoints.json; origin 0: saved by a version without
// sources). It returns what changed.
func applySources(m map[fileKey]*checkpoint, srcs []source) recovery {
	sort.SliceStable(srcs, func(i, j int) bool { return srcs[i].seq < srcs[j].seq })
	var r recovery
	type before struct {
		off     int64
		fp      fingerprint
		present bool
	}
	was := map[fileKey]before{}
	for i := range srcs {
		s := &srcs[i]
		r.maxSeq = max(r.maxSeq, s.seq)
		e := m[s.key]
		if _, ok := was[s.key]; !ok {
			if e != nil {
				was[s.key] = before{e.Offset, e.fingerprint(), true}
			} else {
				was[s.key] = before{}
			}
		}
		b := was[s.key]
		switch {
		case e != nil && e.origin != 0 && s.origin == e.origin:
			// The same chain: it continues where the position is.
			if advance(e, s) && b.present && s.start >= b.off && s.fp == b.fp {
				r.lines += s.count
			}
		case e != nil && e.origin != 0 && s.origin < e.origin:
			// An older chain (an earlier content, or a tailer that
			// closed): what it says is in the checkpoint or out of date.
		case e != nil && e.origin == 0 && s.fp == e.fingerprint():
			// Saved without chains: continued only on exactly the same
			// content.
			if advance(e, s) {
				e.origin = s.origin
				if b.present && s.start >= b.off {
					r.lines += s.count
				}
			}
		default:
			// A newer chain (or one of a file without a checkpoint): taken
			// from its first chunk only, which starts where the chain
			// began, so that nothing before it is skipped.
			if s.start != s.originOff || s.path == "" && e == nil {
				continue
			}
			path := s.path
			if path == "" {
				path = e.Path
			}
			m[s.key] = &checkpoint{
				Dev: s.key.dev, Ino: s.key.ino, FPLen: s.fp.n, FP: s.fp.sum, Offset: s.end, Path: path,
				TailLen: s.tail.n, TailFP: s.tail.sum, origin: s.origin,
			}
			if s.end > s.start {
				r.lines += s.count
			}
		}
	}
	for k, b := range was {
		e := m[k]
		if e == nil || b.present && e.Offset == b.off && e.fingerprint() == b.fp {
			continue
		}
		r.files++
		switch {
		case b.present && e.fingerprint() == b.fp || b.present && e.FPLen != b.fp.n && e.Offset >= b.off:
			r.bytes += max(e.Offset-b.off, 0)
		default:
			r.bytes += e.Offset // would have been read from its start
		}
	}
	return r
}

// advance moves e to the end of s when s starts at or before e's offset
// (everything before is durable) and ends past it.
func advance(e *checkpoint, s *source) bool {
	if s.start > e.Offset || s.end <= e.Offset {
		return false
	}
	e.Offset, e.TailLen, e.TailFP = s.end, s.tail.n, s.tail.sum
	if s.fp.n >= e.FPLen {
		e.FPLen, e.FP = s.fp.n, s.fp.sum
	}
	return true
}

// recoverPositions reads back the positions stored with the chunks after
// the floor saved in checkpoints.json and applies them over the
// checkpoints, before any file is opened. It also sets the sequence past
// every number found.
func (in *Input) recoverPositions(ctx context.Context) {
	st := in.store
	maxSeq := st.maxOrigin()
	if in.pos == nil {
		in.seq.Store(maxSeq)
		return
	}
	var srcs []source
	refused := 0
	err := in.pos.Sources(ctx, st.floor, func(_ int, _ uint64, b []byte) error {
		s, err := decodeSource(b)
		if err != nil {
			refused++
			return nil
		}
		srcs = append(srcs, s)
		return nil
	})
	if err != nil {
		// What was read is still exact: each source only moves a
		// position forward over a durable chunk.
		in.set.Metrics.Error("positions")
		in.log.Warn("reading the positions stored in the buffer failed; files resume from checkpoints.json and what was read", zap.Error(err))
	}
	st.mu.Lock()
	r := applySources(st.m, srcs)
	st.dirty = true // the next save stores a new floor
	st.mu.Unlock()
	r.sources, r.refused = len(srcs), refused
	in.seq.Store(max(maxSeq, r.maxSeq))
	in.recovered = r
	in.met.recoveredBytes.Add(float64(r.bytes))
	in.met.recoveredLines.Add(float64(r.lines))
	fields := []zap.Field{zap.Int("files", r.files), zap.Int64("bytes_not_read_again", r.bytes), zap.Int("lines_not_read_again", r.lines),
		zap.Int("sources", r.sources), zap.Int("refused", r.refused), zap.Uint64s("floor", st.floor)}
	if r.files > 0 || r.refused > 0 {
		in.log.Info(fmt.Sprintf("positions recovered from the buffer: %d files, %d bytes not read again", r.files, r.bytes), fields...)
	} else {
		in.log.Debug("positions recovered from the buffer: none newer than checkpoints.json", fields...)
	}
}
