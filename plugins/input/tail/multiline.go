package tail

import (
	"time"

	"github.com/logship/logship/internal/mpack"
)

// message handles one whole message: multiline joining, then the record.
func (t *tailer) message(s int, content []byte, tm mpack.EventTime, start, end int64, split int) {
	re := t.in.startRe
	if re == nil {
		t.record(s, content, tm, split, end)
		return
	}
	g := &t.ml[s]
	if split != splitNo {
		t.flushML(s)
		t.record(s, content, tm, split, end)
		return
	}
	// A line that matches start_regex starts a group; so does one that
	// would make the group too long: what is there goes out first.
	if re.Match(content) || g.active && len(g.buf)+1+len(content) > t.in.maxLine {
		t.flushML(s)
		g.active, g.start, g.end, g.time, g.last = true, start, end, tm, time.Now()
		g.buf = append(g.buf[:0], content...)
		t.open++
		return
	}
	if !g.active {
		t.record(s, content, tm, splitNo, end)
		return
	}
	g.buf = append(g.buf, '\n')
	g.buf = append(g.buf, content...)
	g.end, g.last = end, time.Now()
}

// flushML emits the multiline group of stream s, if one is open.
func (t *tailer) flushML(s int) {
	g := &t.ml[s]
	if !g.active {
		return
	}
	g.active = false
	t.open--
	t.record(s, g.buf, g.time, splitNo, g.end)
	g.buf = trim(g.buf)
}
