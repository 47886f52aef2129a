package tail

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// truncKey is a content fingerprint on a device: what a copy made by
// copytruncate shares with the file it was copied from.
type truncKey struct {
	dev uint64
	fp  fingerprint
}

// truncRecord remembers, for a while, a file that was truncated: a copy of
// its old content that shows up resumes where the original stopped. It
// does not change once in Input.truncs, but for claimed (under Input.mu).
type truncRecord struct {
	path    string // the original's name and tag: a copy is read under them
	tag     string
	emitted int64   // everything before this offset was emitted
	tail    tailSum // of the bytes before emitted, when known: a copy must have them
	// strict: a copy holds all of emitted (a truncation found at start-up:
	// the copy was made of the whole file). Otherwise a copy may be
	// shorter (copied, then the original grew and was read, then
	// truncated) and is checked only when it is not.
	strict  bool
	unread  int64 // bytes known to exist past emitted: lost unless a copy appears
	at      time.Time
	claimed bool
}

// setGone is called by the scan: gone means no matched name leads to the
// file any more (renamed away or deleted).
func (t *tailer) setGone(gone bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case gone && !t.gone:
		t.gone, t.goneAt = true, time.Now()
		t.in.met.rotation("gone")
		t.poke()
	case !gone && t.gone && !t.deleted:
		t.gone = false
	}
}

// checkDeleted notices that the open file was deleted (no link left): it
// is gone for good, even if a file of the same name comes back.
func (t *tailer) checkDeleted(fi os.FileInfo, now time.Time) {
	if linksOf(fi) != 0 {
		return
	}
	t.mu.Lock()
	if !t.deleted {
		t.deleted = true
		if !t.gone {
			t.gone, t.goneAt = true, now
		}
		t.in.met.rotation("deleted")
	}
	t.mu.Unlock()
}

// checkTruncated notices a file that shrank below the read position or
// whose first bytes changed (truncated and written again), and starts it
// over at 0.
func (t *tailer) checkTruncated(size int64) bool {
	var head [fingerprintBytes]byte
	t.mu.Lock()
	fp := t.fp
	t.mu.Unlock()
	truncated := size < t.readOff || size < int64(fp.n)
	var h []byte
	if !truncated && size > 0 {
		var err error
		h, err = readHead(t.f, size, head[:])
		if err != nil {
			return false
		}
		switch {
		case !fp.matches(h):
			truncated = true
		case size > t.readOff && !tailMatches(t.f, t.readOff, t.readTail):
			// The same first bytes, but not the bytes before the read
			// position: truncated and written again past it between two
			// looks. Reading on would skip the new lines before it.
			truncated = true
		case len(h) > fp.n:
			// The fingerprint grows with the file; the checkpoint gets it
			// too, so that a restart can tell this content from the next.
			nfp := fingerprint{len(h), fnv1a(h)}
			t.mu.Lock()
			t.fp = nfp
			t.in.store.set(t.key, t.path, nfp, t.committed, t.commitTail, t.origin)
			t.mu.Unlock()
			if fp.n == 0 {
				t.in.saveSoon()
			}
		}
	}
	if !truncated {
		return false
	}
	// Wait for the chunks of the old content still in flight: the copy
	// (if any) resumes at what is durable, so a chunk that fails now is
	// read again from the copy rather than lost.
	for {
		t.mu.Lock()
		out := t.outstanding
		t.mu.Unlock()
		if out == 0 || t.in.ctx.Err() != nil {
			break
		}
		t.waitFor(-1)
	}
	if t.in.ctx.Err() != nil {
		return true
	}
	fi, err := t.f.Stat()
	if err != nil {
		return false
	}
	size = fi.Size()
	h, _ = readHead(t.f, size, head[:])
	t.mu.Lock()
	emitted, emittedTail := t.committed, t.commitTail
	t.mu.Unlock()
	unread := max(t.lastSize, t.readOff) - emitted
	t.in.log.Debug("file truncated", zap.String("path", t.path), zap.Int64("was_read_to", t.readOff), zap.Int64("size", size))
	t.reset()
	t.readOff, t.readTail = 0, tailSum{}
	t.lastSize = size
	newFP := fingerprint{len(h), fnv1a(h)}
	// The copy first: once it is open its checkpoint holds the old
	// content's position. Only then may the checkpoint of this file forget
	// it; if the input stops in between, the old checkpoint stays and the
	// next start finds the truncation and the copy again.
	t.in.noteTruncation(t, fp, emitted, emittedTail, unread)
	if t.in.ctx.Err() != nil {
		return true
	}
	t.mu.Lock()
	t.disownLocked()
	t.committed, t.commitTail = 0, tailSum{}
	t.fp = newFP
	// A new chain (source.go) from 0.
	t.origin, t.originOff, t.srcStart, t.srcOff = t.in.seq.Add(1), 0, 0, false
	t.in.store.set(t.key, t.path, newFP, 0, tailSum{}, t.origin)
	t.mu.Unlock()
	if t.in.pos == nil {
		t.in.saveSoon()
		return true
	}
	// Saved before the new content's first chunk: a source of it found
	// after a kill must not replace the old content's checkpoint while
	// that still leads to the copy's unread lines. If the save fails,
	// this content's chunks store no source (a kill reads them again).
	if err := t.in.store.save(); err != nil {
		t.srcOff = true
		t.in.set.Metrics.Error("checkpoint_save")
		t.in.log.Warn("saving checkpoints after a truncation failed; the new content's positions are not stored with its chunks", zap.String("path", t.path), zap.Error(err))
	}
	return true
}

// sameContent checks, after a read at readOff, that the file's first
// bytes and the bytes just before readOff are still those it had: a file
// truncated and written again past the read position would otherwise be
// read from the middle.
func (t *tailer) sameContent() bool {
	if !tailMatches(t.f, t.readOff, t.readTail) {
		return false
	}
	if t.fp.n == 0 {
		return true
	}
	var head [fingerprintBytes]byte
	n, err := t.f.ReadAt(head[:t.fp.n], 0)
	return (err == nil || errors.Is(err, io.EOF)) && n == t.fp.n && t.fp.matches(head[:n])
}

// noteTruncation records that t's content was cut (copytruncate or a
// plain truncation) and looks for the copy next to it.
func (in *Input) noteTruncation(t *tailer, old fingerprint, emitted int64, emittedTail tailSum, unread int64) {
	in.met.rotation("truncated")
	if old.n == 0 {
		in.met.lost(t.path, "truncated", unread)
		return
	}
	key := truncKey{t.key.dev, old}
	in.mu.Lock()
	in.truncs[key] = &truncRecord{path: t.path, tag: t.tag, emitted: emitted, tail: emittedTail, unread: unread, at: time.Now()}
	// A copy found earlier waits for this.
	for _, o := range in.files {
		o.mu.Lock()
		waiting := o.copyOf == t
		o.mu.Unlock()
		if waiting {
			o.poke()
		}
	}
	in.mu.Unlock()
	in.findCopy(key, filepath.Dir(t.real))
}

// findCopy looks in dir for a copy of truncated content that the paths do
// not match (logrotate's copytruncate writes app.log.1 next to app.log):
// it is read from where the original stopped to its end, under the
// original's name and tag, so nothing written before the truncation is
// lost. The copy starts with the original's fingerprint; when that was
// taken over fewer than 256 bytes (the original was short when last
// looked at), only files modified lately qualify and the newest wins: a
// wrong pick adds lines, it never skips any.
func (in *Input) findCopy(key truncKey, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	recent := time.Now().Add(-max(in.cfg.RotateWait.D(), 3*in.cfg.RefreshInterval.D(), 10*time.Second))
	var scratch [fingerprintBytes]byte
	var best string
	var bestFI os.FileInfo
	in.mu.Lock()
	var want struct {
		off    int64
		tail   tailSum
		strict bool
	}
	if rec := in.truncs[key]; rec != nil {
		want.off, want.tail, want.strict = rec.emitted, rec.tail, rec.strict
	}
	in.mu.Unlock()
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || fi.Size() < int64(key.fp.n) || fi.Size() == 0 {
			continue
		}
		if !key.fp.full() && (fi.ModTime().Before(recent) || bestFI != nil && !fi.ModTime().After(bestFI.ModTime())) {
			continue
		}
		k := fileKeyOf(fi)
		if in.tracked(k) != nil || k.dev != key.dev || in.matched(p) {
			continue // a matched copy is picked up by the scan
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		h, err := readHead(f, fi.Size(), scratch[:])
		// A copy holds the bytes before the offset it resumes at, when
		// those are known.
		ok := err == nil && key.fp.matches(h) && holdsTail(f, fi.Size(), want.off, want.tail, want.strict)
		f.Close()
		if !ok {
			continue
		}
		best, bestFI = p, fi
		if key.fp.full() {
			break
		}
	}
	if bestFI == nil {
		return
	}
	rec := in.claimTrunc(key.dev, key.fp, nil) // best was checked above
	if rec == nil {
		return
	}
	in.met.rotation("copy")
	in.open(best, bestFI, false, &openMode{start: min(rec.emitted, bestFI.Size()), gone: true, path: rec.path, tag: rec.tag, how: "copy of a truncated file"})
}

// claimTrunc hands the truncation record of content fp on dev to f, a
// copy of that content, once: f must also hold the bytes before the
// offset the record resumes at, when those are known, so that a file that
// merely starts alike (a fixed header) is not taken for the copy and read
// from the middle. f nil: the caller checked.
func (in *Input) claimTrunc(dev uint64, fp fingerprint, f *os.File) *truncRecord {
	key := truncKey{dev, fp}
	in.mu.Lock()
	rec := in.truncs[key]
	if rec == nil || rec.claimed {
		in.mu.Unlock()
		return nil
	}
	emitted, tail, strict := rec.emitted, rec.tail, rec.strict
	in.mu.Unlock()
	if f != nil && tail.n > 0 {
		fi, err := f.Stat()
		if err != nil || !holdsTail(f, fi.Size(), emitted, tail, strict) {
			return nil
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.truncs[key] != rec || rec.claimed {
		return nil
	}
	rec.claimed = true
	return rec
}

// holdsTail reports whether f, of size bytes, holds the bytes before off
// that tail was taken over, as a copy resuming at off must: always when
// strict, otherwise only once it is long enough to. An unknown tail is
// held.
func holdsTail(f *os.File, size, off int64, tail tailSum, strict bool) bool {
	if tail.n == 0 || !strict && size < off {
		return true
	}
	return tailMatches(f, off, tail)
}

// expireTruncs forgets truncations no copy claimed; what was not read of
// them is lost and counted.
func (in *Input) expireTruncs() {
	// copytruncate makes the copy before it truncates, so the copy is
	// there to be found within a scan or two of the truncation.
	ttl := max(in.cfg.RotateWait.D(), 3*in.cfg.RefreshInterval.D(), time.Second)
	now := time.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, r := range in.truncs {
		if now.Sub(r.at) < ttl {
			continue
		}
		if !r.claimed && r.unread > 0 {
			in.met.lost(r.path, "truncated", r.unread)
		}
		delete(in.truncs, k)
	}
}

// liveWithFingerprint is a followed file other than k, on k's device,
// whose content starts with fp: what a file found with fp may be a copy of.
func (in *Input) liveWithFingerprint(k fileKey, fp fingerprint) *tailer {
	in.mu.Lock()
	defer in.mu.Unlock()
	for tk, t := range in.files {
		if tk.dev != k.dev || tk == k {
			continue
		}
		t.mu.Lock()
		same := t.fp == fp
		t.mu.Unlock()
		if same {
			return t
		}
	}
	return nil
}

// resolveCopy decides where a file that looked like a copy of a live file
// starts: where the original stopped, once the original was truncated
// (copytruncate); at 0 if the original was not truncated in time (a plain
// copy).
func (t *tailer) resolveCopy(now time.Time) bool {
	src := t.copyOf
	start := int64(-1)
	if rec := t.in.claimTrunc(t.key.dev, t.fp, t.f); rec != nil {
		// Past copySize the copy holds lines written to it, not to the
		// original.
		start = min(rec.emitted, t.copySize)
		t.in.met.rotation("copy")
	}
	if start < 0 {
		src.mu.Lock()
		retired := src.retired
		src.mu.Unlock()
		if !retired && now.Before(t.parkUntil) {
			return false
		}
		start = 0
	}
	t.readOff = start
	t.readTail, _ = readTail(t.f, start)
	t.mu.Lock()
	t.copyOf = nil
	t.committed, t.commitTail = start, t.readTail
	fp := t.fp
	t.origin, t.originOff, t.srcStart = t.in.seq.Add(1), start, start
	origin := t.origin
	t.mu.Unlock()
	t.in.store.set(t.key, t.path, fp, start, t.readTail, origin)
	t.in.saveSoon()
	return true
}

// recoverOrphans runs after the first scan: a checkpointed file no longer
// found under a matched name was most likely rotated by rename while
// logship was stopped. It is looked for by inode and fingerprint in its
// directory and read from its checkpoint to its end; if it is gone, its
// checkpoint is forgotten.
func (in *Input) recoverOrphans() {
	seen := in.firstSeen
	in.firstSeen = nil
	byDir := map[string]map[fileKey]string{}
	for _, k := range in.store.keys() {
		if seen[k] {
			continue
		}
		if in.tracked(k) != nil {
			continue
		}
		ck, ok := in.store.get(k)
		if !ok {
			continue
		}
		dir := filepath.Dir(ck.Path)
		idx, ok := byDir[dir]
		if !ok {
			idx = map[fileKey]string{}
			if entries, err := os.ReadDir(dir); err == nil {
				for _, e := range entries {
					if !e.Type().IsRegular() {
						continue
					}
					p := filepath.Join(dir, e.Name())
					if fi, err := os.Stat(p); err == nil {
						idx[fileKeyOf(fi)] = p
					}
				}
			}
			byDir[dir] = idx
		}
		p, found := idx[k]
		var fi os.FileInfo
		if found {
			fi, _ = os.Stat(p)
		}
		if fi == nil || fi.Size() <= ck.Offset {
			in.store.del(k)
			continue
		}
		var scratch [fingerprintBytes]byte
		f, err := os.Open(p)
		if err != nil {
			in.store.del(k)
			continue
		}
		h, _ := readHead(f, fi.Size(), scratch[:])
		same := ck.fingerprint().matches(h) && tailMatches(f, ck.Offset, ck.tail())
		f.Close()
		if !same {
			in.store.del(k)
			continue
		}
		in.log.Info("draining a file rotated while stopped", zap.String("path", p), zap.String("was", ck.Path), zap.Int64("offset", ck.Offset))
		in.met.rotation("renamed")
		in.open(p, fi, false, &openMode{start: ck.Offset, gone: true, path: ck.Path, how: "rotated while stopped"})
	}
}
