package tail

import (
	"bytes"
	"time"

	"github.com/logship/logship/internal/mpack"
)

// Streams: records of none and json files have no stream; cri and docker
// records say stdout or stderr. Partial messages are merged per stream.
const (
	streamNone = iota
	streamStdout
	streamStderr
	numStreams
)

// line handles one complete line spanning [start, end) in the file.
func (t *tailer) line(b []byte, start, end int64) {
	switch t.in.cfg.Format {
	case FormatCRI:
		tm, stream, partial, content, ok := parseCRI(b)
		if !ok {
			t.in.met.invalid.Inc()
			t.message(streamNone, b, t.readTime, start, end, splitNo)
			return
		}
		t.part(stream, content, tm, partial, start, end)
	case FormatDocker:
		d, ok := parseDocker(b)
		if !ok {
			t.in.met.unparsed(b)
			t.message(streamNone, b, t.readTime, start, end, splitNo)
			return
		}
		content := d.log
		if d.logEsc {
			t.scratch, ok = appendUnescaped(t.scratch[:0], d.log)
			if !ok {
				t.in.met.invalid.Inc()
				t.message(streamNone, b, t.readTime, start, end, splitNo)
				return
			}
			content = t.scratch
		}
		partial := true
		if n := len(content); n > 0 && content[n-1] == '\n' {
			content, partial = content[:n-1], false
		}
		stream := streamStdout
		if string(d.stream) == "stderr" {
			stream = streamStderr
		}
		tm, ok := parseRFC3339(d.time)
		if !ok {
			tm = t.readTime
		}
		t.part(stream, content, tm, partial, start, end)
		t.scratch = trim(t.scratch)
	default:
		t.message(streamNone, b, t.readTime, start, end, splitNo)
	}
}

// parseCRI reads "TIME STREAM P|F CONTENT" (containerd, CRI-O).
func parseCRI(b []byte) (tm mpack.EventTime, stream int, partial bool, content []byte, ok bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 {
		return
	}
	tm, ok = parseRFC3339(b[:sp])
	if !ok {
		return
	}
	rest := b[sp+1:]
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		stream = streamStdout
	case bytes.HasPrefix(rest, []byte("stderr ")):
		stream = streamStderr
	default:
		return tm, 0, false, nil, false
	}
	rest = rest[7:]
	tag := rest
	if sp := bytes.IndexByte(rest, ' '); sp >= 0 {
		tag, content = rest[:sp], rest[sp+1:]
	} else {
		content = rest[len(rest):]
	}
	if len(tag) == 0 || tag[0] != 'P' && tag[0] != 'F' || len(tag) > 1 && tag[1] != ':' {
		return tm, 0, false, nil, false
	}
	return tm, stream, tag[0] == 'P', content, true
}

// group is a message being assembled from several lines.
type group struct {
	active bool
	start  int64 // file offset of its first line
	end    int64 // file offset after its last line
	time   mpack.EventTime
	buf    []byte
	pieces bool // pieces of it were emitted already (it is being split)
	last   time.Time
}

// part adds one part of a cri/docker message: partial parts are merged
// until the final part of the same stream.
func (t *tailer) part(s int, content []byte, tm mpack.EventTime, partial bool, start, end int64) {
	g := &t.merge[s]
	if !g.active {
		if !partial {
			t.message(s, content, tm, start, end, splitNo)
			return
		}
		g.active, g.start, g.time, g.buf, g.pieces = true, start, tm, g.buf[:0], false
		t.open++
	}
	g.last = time.Now()
	g.end = end
	maxLine := t.in.maxLine
	for len(g.buf)+len(content) > maxLine {
		room := maxLine - len(g.buf)
		n := room
		if room > 0 {
			n = cutPoint(content, room)
		}
		g.buf = append(g.buf, content[:n]...)
		content = content[n:]
		// The piece goes out; the rest of the message continues in the
		// current line, so the checkpoint may not pass its start.
		g.start = start
		t.message(s, g.buf, g.time, start, end, splitMore)
		g.buf, g.pieces = g.buf[:0], true
	}
	g.buf = append(g.buf, content...)
	if !partial {
		t.finishMerge(s)
	}
}

// finishMerge emits the merged message of stream s, if one is open.
func (t *tailer) finishMerge(s int) {
	g := &t.merge[s]
	if !g.active {
		return
	}
	g.active = false
	t.open--
	split := splitNo
	if g.pieces {
		split = splitLast
	}
	t.message(s, g.buf, g.time, g.start, g.end, split)
	g.buf = trim(g.buf)
}
