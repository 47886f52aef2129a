package tail

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// scan globs the paths, opens new files, marks tracked files that no
// longer appear under a matched name as gone (they are drained for
// rotate_wait) and forgets checkpoints of files that are gone for good.
func (in *Input) scan(first bool) {
	if in.ctx.Err() != nil {
		return
	}
	now := time.Now()
	seen := map[fileKey]bool{}
	dirs := map[string]bool{}
	type found struct {
		path string
		fi   os.FileInfo
	}
	var fresh, rest []found
	for _, pat := range in.cfg.Paths {
		if d := staticDir(pat); d != "" {
			if a, err := filepath.Abs(d); err == nil {
				dirs[a] = true
			}
		}
		matches, err := filepath.Glob(pat)
		if err != nil {
			continue
		}
		for _, p := range matches {
			if in.excluded(p) {
				continue
			}
			fi, err := os.Stat(p)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			k := fileKeyOf(fi)
			if seen[k] {
				continue // the same file under two matched names: the first wins
			}
			seen[k] = true
			if t := in.tracked(k); t != nil {
				t.setGone(false)
				continue
			}
			ck, hasCk := in.store.get(k)
			if older := in.cfg.IgnoreOlder.D(); older > 0 && fi.ModTime().Before(now.Add(-older)) {
				if !hasCk || ck.Offset >= fi.Size() {
					continue
				}
			}
			if hasCk {
				fresh = append(fresh, found{p, fi})
			} else {
				rest = append(rest, found{p, fi})
			}
		}
	}
	// Files with a checkpoint first: one truncated while logship was
	// stopped leaves a record that its copy, opened after it, claims.
	for _, f := range append(fresh, rest...) {
		in.open(f.path, f.fi, first, nil)
	}
	in.mu.Lock()
	for k, t := range in.files {
		if !seen[k] {
			t.setGone(true)
		}
		dirs[filepath.Dir(t.real)] = true
		if a, err := filepath.Abs(filepath.Dir(t.path)); err == nil {
			dirs[a] = true
		}
	}
	in.mu.Unlock()
	if !first {
		// Forget the checkpoints of files gone for good. Tracked is checked
		// under the lock at each step: a tailer may open a file (a copy)
		// meanwhile.
		for _, k := range in.store.keys() {
			if seen[k] {
				continue
			}
			in.mu.Lock()
			if _, tracked := in.files[k]; !tracked {
				in.store.del(k)
			}
			in.mu.Unlock()
		}
	} else {
		in.firstSeen = seen
	}
	in.updateWatches(dirs)
}

// matched reports whether p is one of the files the config asks for.
func (in *Input) matched(p string) bool {
	for _, pat := range in.cfg.Paths {
		if ok, _ := filepath.Match(pat, p); ok {
			return !in.excluded(p)
		}
	}
	return false
}

// excluded reports whether p matches exclude_paths; a pattern without a
// slash is also matched against the base name.
func (in *Input) excluded(p string) bool {
	for _, pat := range in.cfg.ExcludePaths {
		if ok, _ := filepath.Match(pat, p); ok {
			return true
		}
		if !strings.Contains(pat, "/") {
			if ok, _ := filepath.Match(pat, filepath.Base(p)); ok {
				return true
			}
		}
	}
	return false
}

// staticDir is the directory part of a glob before its first wildcard.
func staticDir(pattern string) string {
	parts := strings.Split(filepath.Clean(pattern), string(filepath.Separator))
	for i, p := range parts {
		if strings.ContainsAny(p, `*?[\`) {
			d := strings.Join(parts[:i], string(filepath.Separator))
			if d == "" && filepath.IsAbs(pattern) {
				d = string(filepath.Separator)
			}
			return d
		}
	}
	return filepath.Dir(filepath.Clean(pattern))
}

// absReal is p absolute with its symbolic links resolved (p itself where
// that fails): the name inotify events carry.
func absReal(p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		r = p
	}
	if a, err := filepath.Abs(r); err == nil {
		r = a
	}
	return r
}

// updateWatches makes the watched directories those in dirs. The
// watcher's own list is the truth: the kernel drops the watch of a
// directory that is deleted, and one created again must be watched anew.
func (in *Input) updateWatches(dirs map[string]bool) {
	if in.watcher == nil {
		return
	}
	current := map[string]bool{}
	for _, d := range in.watcher.WatchList() {
		current[d] = true
		if !dirs[d] {
			_ = in.watcher.Remove(d)
		}
	}
	for d := range dirs {
		if current[d] {
			continue
		}
		if err := in.watcher.Add(d); err != nil && !os.IsNotExist(err) {
			in.warnOnce("watch:"+d, "cannot watch directory; relying on polling", zap.String("dir", d), zap.Error(err))
		}
	}
}

// watch turns inotify events on the watched directories into wake-ups of
// the files they name and into scans when names appear or go.
func (in *Input) watch() {
	defer in.wg.Done()
	for {
		select {
		case <-in.ctx.Done():
			return
		case ev, ok := <-in.watcher.Events:
			if !ok {
				return
			}
			in.mu.Lock()
			for _, t := range in.byReal[ev.Name] {
				t.poke()
			}
			in.mu.Unlock()
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove) {
				in.requestScan()
			}
		case err, ok := <-in.watcher.Errors:
			if !ok {
				return
			}
			// An overflowed queue lost events: look at everything.
			in.log.Debug("inotify error; rescanning", zap.Error(err))
			in.requestScan()
			in.wakeAll()
		}
	}
}

// requestScan asks the manager for a scan (debounced); it never blocks.
func (in *Input) requestScan() {
	select {
	case in.scanReq <- struct{}{}:
	default:
	}
}

// wakeAll wakes every followed file, for the safety-net poll.
func (in *Input) wakeAll() {
	in.mu.Lock()
	for _, t := range in.files {
		t.poke()
	}
	in.mu.Unlock()
}
