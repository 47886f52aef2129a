package broker

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// meta is the content of the META file (see "Epochs" in doc.go):
//
//	logship-buffer 2
//	incarnation 1a2b3c4d
//	epoch 7
//	clean
//
// The last line is there only after a clean Close.
type meta struct {
	version     int
	incarnation uint32 // random, made when the buffer is created; 0 in a version 1 META
	epoch       uint32 // the epoch of the records appended since the last Open
	clean       bool   // the last Close synced everything and wrote this file
}

func (m meta) encode() []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "logship-buffer %d\nincarnation %08x\nepoch %d\n", metaVersion, m.incarnation, m.epoch)
	if m.clean {
		sb.WriteString("clean\n")
	}
	return []byte(sb.String())
}

var errBadMeta = errors.New("bad META file")

// parseMeta decodes META. A version newer than this code reads is an
// errUnknownVersion error; anything else it cannot read is errBadMeta.
func parseMeta(data []byte) (meta, error) {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var m meta
	if _, err := fmt.Sscanf(lines[0], "logship-buffer %d", &m.version); err != nil || m.version < 1 {
		return meta{}, errBadMeta
	}
	if m.version > metaVersion {
		return m, fmt.Errorf("%w: buffer format version %d is newer than this logship's (%d)", errUnknownVersion, m.version, metaVersion)
	}
	if m.version == 1 {
		if len(lines) != 1 {
			return meta{}, errBadMeta
		}
		return m, nil // no incarnation, no epoch, not known to be clean
	}
	seen := 0
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		switch k {
		case "incarnation":
			n, err := strconv.ParseUint(v, 16, 32)
			if err != nil {
				return meta{}, errBadMeta
			}
			m.incarnation = uint32(n)
			seen |= 1
		case "epoch":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return meta{}, errBadMeta
			}
			m.epoch = uint32(n)
			seen |= 2
		case "clean":
			m.clean = v == ""
		default:
			return meta{}, errBadMeta
		}
	}
	if seen != 3 || m.incarnation == 0 {
		return meta{}, errBadMeta
	}
	return m, nil
}

// readMeta reads dir/META. found is false when there is none, or when it
// is damaged (then logged, and set aside if it is not a file).
func readMeta(dir string, log *zap.Logger) (m meta, found bool, err error) {
	path := filepath.Join(dir, metaFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return meta{}, false, nil
	}
	if err == nil {
		m, err = parseMeta(data)
		if err == nil {
			return m, true, nil
		}
		if errors.Is(err, errUnknownVersion) {
			return meta{}, false, fmt.Errorf("broker: %s: %w", path, err)
		}
	}
	log.Warn("buffer META file unreadable; the buffer gets a new incarnation (its records new epochs)",
		zap.String("path", path), zap.Error(err))
	if st, serr := os.Lstat(path); serr == nil && !st.Mode().IsRegular() {
		setAside(path, log)
	}
	return meta{}, false, nil
}

// newIncarnation returns a random non-zero id.
func newIncarnation() (uint32, error) {
	var b [4]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("broker: incarnation id: %w", err)
		}
		if v := binary.LittleEndian.Uint32(b[:]); v != 0 {
			return v, nil
		}
	}
}

// beginEpoch decides the epoch of the records this Open appends and makes
// it durable (META without the clean marker) before any append. A new
// epoch begins unless the last Close was clean and no partition restarted
// offsets (restart names why one did).
func (b *Broker) beginEpoch(old meta, found bool, maxSeen uint32, restart string) error {
	m := old
	log := b.log
	switch {
	case !found || m.incarnation == 0:
		inc, err := newIncarnation()
		if err != nil {
			return err
		}
		m.incarnation = inc
		m.epoch = max(m.epoch, maxSeen) + 1
		if found {
			log.Info("buffer gets an incarnation id (format upgrade)", zap.String("incarnation", fmt.Sprintf("%08x", inc)))
		}
	case !m.clean || restart != "" || maxSeen > m.epoch:
		if m.epoch == math.MaxUint32 || maxSeen == math.MaxUint32 {
			inc, err := newIncarnation()
			if err != nil {
				return err
			}
			m.incarnation, m.epoch, maxSeen = inc, 0, 0
		}
		m.epoch = max(m.epoch, maxSeen) + 1
		why := restart
		if !old.clean {
			why = "the last stop was not clean"
		}
		log.Info("new buffer epoch", zap.Uint32("epoch", m.epoch), zap.String("why", why))
	}
	m.clean = false
	b.incarnation, b.epoch, b.meta = m.incarnation, m.epoch, m
	if err := b.ensureMeta(); err != nil {
		if !isDiskFull(err) {
			return err
		}
		// a full filesystem is backpressure here too: the writers retry
		// before their first append
		log.Warn("cannot persist the buffer epoch yet (filesystem full); appends wait", zap.Error(err))
	}
	return nil
}

// ensureMeta makes META (this Open's epoch, without the clean marker)
// durable if it is not yet. Every write to a segment is preceded by it.
func (b *Broker) ensureMeta() error {
	if b.metaDurable.Load() {
		return nil
	}
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	if b.metaDurable.Load() {
		return nil
	}
	if err := b.writeMeta(b.meta); err != nil {
		return err
	}
	b.metaDurable.Store(true)
	return nil
}

// writeMeta replaces META atomically and durably (temp file, fsync,
// rename, fsync of the directory).
func (b *Broker) writeMeta(m meta) error {
	if err := b.opts.writeMeta(filepath.Join(b.dir, metaFile), m.encode()); err != nil {
		return fmt.Errorf("broker: write META: %w", err)
	}
	return nil
}

// recordEpoch returns Record.Epoch for a frame epoch. Frame epoch 0 is
// only ever found in version 1 segments (every Open since appends with an
// epoch of at least 1): such records report epoch 0, so that the chunk ids
// a forward output gave them before the upgrade stay the same.
func (b *Broker) recordEpoch(frameEpoch uint32) uint64 {
	if frameEpoch == 0 {
		return 0
	}
	return uint64(b.incarnation)<<32 | uint64(frameEpoch)
}

// setAside renames a damaged path out of the way (to
// NAME.damaged-UNIXNANOS), so that the broker can put a good file there. It
// returns the new name, or "" if the rename failed (logged).
func setAside(path string, log *zap.Logger) string {
	to := fmt.Sprintf("%s.damaged-%d", path, time.Now().UnixNano())
	if err := os.Rename(path, to); err != nil {
		log.Warn("cannot set a damaged path aside", zap.String("path", path), zap.Error(err))
		return ""
	}
	_ = syncDir(filepath.Dir(path))
	log.Warn("damaged path set aside", zap.String("path", path), zap.String("now", to))
	return to
}
