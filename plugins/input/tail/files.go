package tail

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// openMode says how a file found by open starts.
type openMode struct {
	start     int64   // first offset to read
	copyOf    *tailer // a possible copy of this live file: wait for its truncation
	gone      bool    // not under a matched name: read to the end, then close
	path, tag string  // overrides for a copy read under its original's name
	how       string
	tail      tailSum // of the bytes before start; filled by open
}

// open opens a file found at p and starts its tailer. mode, when given,
// fixes where reading starts (orphans and copies found by other means).
func (in *Input) open(p string, fi os.FileInfo, first bool, mode *openMode) {
	f, err := os.Open(p)
	if err != nil {
		if os.IsNotExist(err) {
			if mode == nil && (in.cfg.ReadFromHead || !first) && fi.Size() > 0 {
				in.met.lost(p, "vanished", fi.Size())
			}
			return
		}
		in.set.Metrics.Error("open")
		in.warnOnce("open:"+p, "cannot open file", zap.String("path", p), zap.Error(err))
		return
	}
	fi2, err := f.Stat()
	if err != nil || !fi2.Mode().IsRegular() {
		f.Close()
		return
	}
	k := fileKeyOf(fi2)
	size := fi2.Size()
	var head [fingerprintBytes]byte
	h, err := readHead(f, size, head[:])
	if err != nil {
		f.Close()
		in.set.Metrics.Error("read")
		in.warnOnce("read:"+p, "cannot read file", zap.String("path", p), zap.Error(err))
		return
	}
	fp := fingerprint{len(h), fnv1a(h)}
	var m openMode
	if mode != nil {
		m = *mode
	} else {
		m = in.decideStart(f, k, fi2, h, fp, first)
	}
	if m.path == "" {
		m.path = p
	}
	if m.tag == "" {
		m.tag = expandTag(in.cfg.Tag, m.path)
	}
	if m.copyOf == nil {
		m.tail, _ = readTail(f, m.start)
	}
	t := newTailer(in, f, k, m, fp, size)
	in.mu.Lock()
	if in.files[k] != nil || in.ctx.Err() != nil {
		in.mu.Unlock()
		f.Close()
		return
	}
	in.files[k] = t
	in.byReal[t.real] = append(in.byReal[t.real], t)
	in.met.addFile(t, in.pathRefs)
	in.mu.Unlock()
	if m.copyOf == nil {
		in.store.set(k, t.path, fp, m.start, m.tail, t.origin)
		// A new file's identity goes to disk at once, not at the next
		// periodic save: renamed away and followed by a crash, it is
		// then still found and read after the restart.
		in.saveSoon()
	}
	in.log.Debug("following file", zap.String("path", t.path), zap.Int64("offset", m.start), zap.String("start", m.how), zap.Uint64("inode", k.ino))
	in.wg.Add(1)
	go t.run()
}

// decideStart picks where a newly found file is read from.
func (in *Input) decideStart(f *os.File, k fileKey, fi os.FileInfo, head []byte, fp fingerprint, first bool) openMode {
	size := fi.Size()
	if ck, ok := in.store.get(k); ok {
		ckfp := ck.fingerprint()
		how := "identity changed"
		if ckfp.matches(head) {
			if ck.Offset > size {
				in.met.rotation("truncated")
				return openMode{start: 0, how: "truncated while stopped"}
			}
			if tailMatches(f, ck.Offset, ck.tail()) {
				return openMode{start: ck.Offset, how: "checkpoint"}
			}
			// The first bytes are the same but those before the
			// checkpoint are not: truncated and written again past the
			// old offset (or the inode was reused for a file that starts
			// alike). Resuming would skip the new lines before it.
			in.met.rotation("rewritten")
			in.log.Warn("file rewritten while logship was stopped (same first bytes, other content before the checkpoint); reading it from its start",
				zap.String("path", f.Name()), zap.Int64("checkpoint", ck.Offset), zap.Int64("size", size))
			how = "rewritten while stopped"
		}
		// Same inode, other content: rewritten in place (copytruncate)
		// while logship was stopped, or the inode was reused. A copy of
		// the old content resumes at the old checkpoint.
		if ckfp.n > 0 {
			key := truncKey{k.dev, ckfp}
			in.mu.Lock()
			in.truncs[key] = &truncRecord{path: ck.Path, tag: expandTag(in.cfg.Tag, ck.Path), emitted: ck.Offset, tail: ck.tail(), strict: true, at: time.Now()}
			in.mu.Unlock()
			in.findCopy(key, filepath.Dir(absReal(f.Name())))
		}
		return openMode{start: 0, how: how}
	}
	if fp.full() {
		if rec := in.claimTrunc(k.dev, fp, f); rec != nil {
			in.met.rotation("copy")
			return openMode{start: min(rec.emitted, size), how: "copy of a truncated file"}
		}
		if !first {
			if src := in.liveWithFingerprint(k, fp); src != nil {
				return openMode{copyOf: src, how: "possible copy"}
			}
		}
	}
	// Modified after the last save (less a scan period, since a file is
	// found up to a scan after it appears, and a second for coarse file
	// system clocks): created while logship was stopped.
	createdWhileStopped := in.store.existed && fi.ModTime().After(in.store.savedAt.Add(-in.cfg.RefreshInterval.D()-time.Second))
	if in.cfg.ReadFromHead || !first || createdWhileStopped || in.store.recovered != nil {
		return openMode{start: 0, how: "head"}
	}
	return openMode{start: lastLineStart(f, size, in.maxLine), how: "end"}
}

// lastLineStart is the offset after the last newline in the file's final
// window: reading starts with the line being written, not in its middle.
// It reads backwards in small steps (the newline is nearly always close to
// the end).
func lastLineStart(f *os.File, size int64, window int) int64 {
	var b [4096]byte
	for end := size; end > 0 && size-end < int64(window); {
		n := min(end, int64(len(b)), int64(window)-(size-end))
		got, err := f.ReadAt(b[:n], end-n)
		if int64(got) != n && err != nil {
			return size
		}
		if i := bytes.LastIndexByte(b[:n], '\n'); i >= 0 {
			return end - n + int64(i) + 1
		}
		end -= n
		if end == 0 {
			return 0
		}
	}
	return size
}

// tracked is the tailer following the file k, or nil.
func (in *Input) tracked(k fileKey) *tailer {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.files[k]
}

// untrack removes a tailer that finished (retired or closed while idle).
func (in *Input) untrack(t *tailer) {
	in.mu.Lock()
	if in.files[t.key] == t {
		delete(in.files, t.key)
	}
	ts := in.byReal[t.real]
	for i, o := range ts {
		if o == t {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(in.byReal, t.real)
	} else {
		in.byReal[t.real] = ts
	}
	in.met.dropFile(t.path, in.pathRefs)
	in.mu.Unlock()
}

// expandTag replaces '*' in tag with path, slashes turned into dots.
func expandTag(tag, path string) string {
	if !strings.Contains(tag, "*") {
		return tag
	}
	p := strings.TrimLeft(strings.ReplaceAll(filepath.ToSlash(path), "/", "."), ".")
	return strings.ReplaceAll(tag, "*", p)
}
