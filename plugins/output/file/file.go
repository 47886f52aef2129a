package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/output/internal/jsonl"
)

// Factory registers the file output.
func Factory() pipeline.Factory {
	return pipeline.NewOutputFactory("file", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Output, error) {
			return &Output{cfg: cfg, set: set}, nil
		})
}

var (
	_ pipeline.Output   = (*Output)(nil)
	_ pipeline.Reopener = (*Output)(nil)
)

// Output appends JSON lines to a file, each batch once (see the package
// doc).
type Output struct {
	cfg *Config
	set pipeline.Settings

	mu    sync.Mutex
	f     *os.File
	buf   []byte
	st    state       // what the file holds
	store *stateStore // nil: the state is kept in memory only
	dirty bool        // st differs from what store holds

	lastCut time.Time // the last log of records cut at the JSON depth limit
}

func (o *Output) errorf(format string, args ...any) error {
	return fmt.Errorf("file output %s: "+format, append([]any{o.set.Name}, args...)...)
}

func (o *Output) logger() *zap.Logger {
	if o.set.Logger == nil {
		return zap.NewNop()
	}
	return o.set.Logger
}

// open opens the file at the path, creating it and its directories.
func (o *Output) open() (*os.File, error) {
	perm, _ := o.cfg.perm()
	if err := os.MkdirAll(filepath.Dir(o.cfg.Path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(o.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm)
}

// Start reads the output's state, opens the file, and cuts from it what
// the state does not cover (a batch torn or not recorded when the process
// was killed).
func (o *Output) Start(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	log := o.logger()
	if o.set.DataDir != "" {
		store, st, err := openStateStore(filepath.Join(o.set.DataDir, "output", o.set.Name))
		if errors.Is(err, errNoState) {
			log.Warn("the file output's state is unreadable; starting without it: batches read again from the buffer may be written twice", zap.String("state", store.path))
		} else if err != nil {
			return o.errorf("state: %w", err)
		}
		o.store, o.st = store, st
	}
	f, err := o.open()
	if err != nil {
		_ = o.store.close()
		o.store = nil
		return o.errorf("%w", err)
	}
	dev, ino, size, err := fileID(f)
	if err != nil {
		f.Close()
		_ = o.store.close()
		o.store = nil
		return o.errorf("%w", err)
	}
	switch {
	case o.st.seq == 0 || dev != o.st.dev || ino != o.st.ino:
		// no state, or the file was renamed away meanwhile: not ours to cut
	case size > o.st.length:
		if err := f.Truncate(o.st.length); err != nil {
			f.Close()
			_ = o.store.close()
			o.store = nil
			return o.errorf("cut %s back to %d bytes: %w", o.cfg.Path, o.st.length, err)
		}
		if o.cfg.Fsync {
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				log.Warn("fdatasync after cutting the file back", zap.String("path", o.cfg.Path), zap.Error(err))
			}
		}
		log.Info("cut the end of the file that the output's state does not cover (written when logship was killed; read again from the buffer)",
			zap.String("path", o.cfg.Path), zap.Int64("bytes", size-o.st.length), zap.Int64("length", o.st.length))
		size = o.st.length
	case size < o.st.length:
		log.Warn("the file is shorter than the output's state says (a power cut without fsync, or truncated by someone else); events may be missing from it",
			zap.String("path", o.cfg.Path), zap.Int64("length", size), zap.Int64("recorded", o.st.length))
	}
	o.f = f
	o.follow(dev, ino, size)
	return nil
}

// follow records the file the output writes now. The state is stored at
// once, so that it names the file before a batch goes to it; if that
// fails, the next Write tries again before it writes.
func (o *Output) follow(dev, ino uint64, size int64) {
	if o.st.seq != 0 && dev == o.st.dev && ino == o.st.ino && size == o.st.length {
		return
	}
	o.st.dev, o.st.ino, o.st.length = dev, ino, size
	o.dirty = true
	if err := o.persist(); err != nil {
		o.logger().Warn("storing the file output's state", zap.Error(err))
	}
}

// persist stores the state if it changed.
func (o *Output) persist() error {
	if !o.dirty {
		return nil
	}
	if o.store != nil {
		if err := o.store.save(&o.st, o.cfg.Fsync); err != nil {
			return err
		}
	} else {
		o.st.seq++
	}
	o.dirty = false
	return nil
}

// Write appends the batch with one write(2) and records it in the state
// before it returns, so the state is never behind the buffer's cursor. A
// batch the state says was written already is skipped and counted as a
// duplicate.
func (o *Output) Write(_ context.Context, b pipeline.Batch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return errors.New("file output: not started")
	}
	// A state not stored yet (a failed write of it) first: nothing is
	// acknowledged, and nothing written, that it does not cover.
	if err := o.persist(); err != nil {
		return o.errorf("%w", err)
	}
	if o.st.written(b) {
		if o.set.Metrics != nil {
			o.set.Metrics.Duplicates.Add(float64(b.Count))
		}
		return nil
	}
	var err error
	var cut int
	o.buf, cut, err = o.cfg.Append(o.buf[:0], b)
	if err != nil {
		return pipeline.Permanent(err)
	}
	jsonl.CountCut(o.set, &o.lastCut, cut)
	if n, err := o.f.Write(o.buf); err != nil {
		// Cut a partial batch off (ENOSPC), so that the retry does not
		// leave a torn line behind.
		if n > 0 {
			if end, serr := o.f.Seek(0, io.SeekCurrent); serr == nil {
				_ = o.f.Truncate(end - int64(n))
			}
		}
		return fmt.Errorf("write %s: %w", o.cfg.Path, err)
	}
	// With O_APPEND the offset is the end of what was just written, also
	// when someone else truncated the file (copytruncate).
	end, err := o.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return o.cutBack(fmt.Errorf("seek %s: %w", o.cfg.Path, err))
	}
	if o.cfg.Fsync {
		if err := unix.Fdatasync(int(o.f.Fd())); err != nil {
			return o.cutBack(fmt.Errorf("fdatasync %s: %w", o.cfg.Path, err))
		}
	}
	o.st.advance(b, end)
	o.dirty = true
	if err := o.persist(); err != nil {
		// The batch is in the file and in o.st: the retry stores the state
		// and skips the batch.
		return o.errorf("%w", err)
	}
	return nil
}

// cutBack cuts what the failed Write wrote, so its retry does not write
// it twice, and returns err.
func (o *Output) cutBack(err error) error {
	if terr := o.f.Truncate(o.st.length); terr != nil {
		o.logger().Warn("cutting back a batch that failed", zap.String("path", o.cfg.Path), zap.Error(terr))
	}
	return err
}

// Reopen implements pipeline.Reopener: when the path names another file
// than the one open (logrotate renamed it away), the output lets the old
// one go and writes the next batches to the file at the path, creating
// it.
func (o *Output) Reopen() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return nil
	}
	f, err := o.open()
	if err != nil {
		return o.errorf("reopen: %w", err)
	}
	dev, ino, size, err := fileID(f)
	if err != nil {
		f.Close()
		return o.errorf("reopen: %w", err)
	}
	if dev == o.st.dev && ino == o.st.ino {
		f.Close()
		return nil
	}
	old := o.f
	o.f = f
	o.follow(dev, ino, size)
	if err := old.Close(); err != nil {
		o.logger().Warn("closing the previous file", zap.Error(err))
	}
	o.logger().Info("file reopened", zap.String("path", o.cfg.Path))
	return nil
}

// Stop closes the file and the state.
func (o *Output) Stop(context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return nil
	}
	err := o.persist()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	o.f = nil
	if cerr := o.store.close(); err == nil {
		err = cerr
	}
	o.store = nil
	return err
}
