package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/logship/logship/internal/testutil"
)

func readMetaT(t *testing.T, dir string) meta {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseMeta(data)
	if err != nil {
		t.Fatalf("META %q: %v", data, err)
	}
	return m
}

func epochsOf(rs []Record) map[uint64]uint64 {
	m := map[uint64]uint64{}
	for _, r := range rs {
		m[r.Offset] = r.Epoch
	}
	return m
}

// TestEpochAfterPowerCut: records lost by a power cut were read (SyncNone
// lets readers see unsynced records); after the cut the same offsets hold
// new records, and those carry a different epoch of the same incarnation.
func TestEpochAfterPowerCut(t *testing.T) {
	fs := newPowerFS()
	dir := t.TempDir()
	opts := []Option{WithPartitions(1), WithSync(SyncNone)}
	b, err := Open(dir, append(opts, withOpenFile(fs.open), withSyncDir(fs.syncDir))...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Cursor("fwd", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		mustAppend(t, b, "t", payload("old", i, 100), 1)
	}
	lost := readN(t, c, 10)
	if err := c.Commit(9); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	crashed := cutPower(t, dir, fs.snapshot()) // nothing was fdatasync'd
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := openT(t, crashed, opts...)
	if next := b2.Stats().Partitions[0].NextOffset; next != 0 {
		t.Fatalf("next offset %d after the cut, want 0 (the unsynced tail lost)", next)
	}
	for i := 0; i < 10; i++ {
		mustAppend(t, b2, "t", payload("new", i, 100), 1)
	}
	c2, err := b2.Cursor("fwd", 0) // its file said 10: clamped to the end, 0
	if err != nil {
		t.Fatal(err)
	}
	if c2.Committed() != 0 {
		t.Fatalf("cursor at %d", c2.Committed())
	}
	fresh := readN(t, c2, 10)
	for i := range fresh {
		o, n := lost[i], fresh[i]
		if o.Offset != n.Offset || bytes.Equal(o.Entries, n.Entries) {
			t.Fatalf("record %d: offsets %d/%d", i, o.Offset, n.Offset)
		}
		if o.Epoch == n.Epoch {
			t.Fatalf("offset %d reused for new bytes with the same epoch %x", n.Offset, n.Epoch)
		}
		if o.Epoch>>32 != n.Epoch>>32 || uint32(n.Epoch) <= uint32(o.Epoch) {
			t.Fatalf("epochs %x then %x: want the same incarnation, a later epoch", o.Epoch, n.Epoch)
		}
	}
}

// TestEpochKeptByCleanReopen: a clean Close writes the marker; the next
// Open keeps the epoch, removes the marker durably before any append, and
// a later unclean open (no Close: what SIGKILL leaves) begins a new epoch.
func TestEpochKeptByCleanReopen(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	e1 := b.Stats().Epoch
	if e1>>32 == 0 || uint32(e1) != 1 {
		t.Fatalf("new buffer epoch %x: want a non-zero incarnation and epoch 1", e1)
	}
	mustAppend(t, b, "t", []byte("a"), 1)
	if m := readMetaT(t, dir); m.clean || m.epoch != 1 {
		t.Fatalf("META while open: %+v", m)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if m := readMetaT(t, dir); !m.clean || m.epoch != 1 || uint64(m.incarnation) != e1>>32 {
		t.Fatalf("META after Close: %+v", m)
	}

	b = openT(t, dir, WithPartitions(1))
	if e := b.Stats().Epoch; e != e1 {
		t.Fatalf("epoch after a clean reopen %x, want %x", e, e1)
	}
	if m := readMetaT(t, dir); m.clean {
		t.Fatal("clean marker still there after Open")
	}
	mustAppend(t, b, "t", []byte("b"), 1)
	c, err := b.Cursor("x", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readN(t, c, 2) {
		if r.Epoch != e1 {
			t.Fatalf("record %d epoch %x, want %x", r.Offset, r.Epoch, e1)
		}
	}

	// no Close: the copy is what a SIGKILL leaves
	killed := copyDir(t, dir)
	b2 := openT(t, killed, WithPartitions(1))
	e2 := b2.Stats().Epoch
	if e2>>32 != e1>>32 || uint32(e2) != 2 {
		t.Fatalf("epoch after an unclean open %x, want incarnation %x epoch 2", e2, e1>>32)
	}
	mustAppend(t, b2, "t", []byte("c"), 1)
	c2, err := b2.Cursor("x", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := epochsOf(readN(t, c2, 3))
	if got[0] != e1 || got[1] != e1 || got[2] != e2 {
		t.Fatalf("epochs %v: a record keeps the epoch it was written in", got)
	}
}

// TestEpochNewIncarnationWhenRecreated: a buffer directory created anew
// gets another incarnation, so its records' epochs differ from the old
// ones at the same offsets.
func TestEpochNewIncarnationWhenRecreated(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	e1 := b.Stats().Epoch
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, WithPartitions(1))
	e2 := b.Stats().Epoch
	if e2>>32 == e1>>32 || e2 == e1 {
		t.Fatalf("recreated buffer: epoch %x, before %x; want another incarnation", e2, e1)
	}
}

// TestEpochNewWhenPartitionRecreated: a partition directory lost while
// META stayed restarts offsets: a new epoch begins even after a clean
// stop.
func TestEpochNewWhenPartitionRecreated(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, b, "t", []byte("a"), 1)
	e1 := b.Stats().Epoch
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, partDirName(0))); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, WithPartitions(1))
	if e2 := b.Stats().Epoch; e2 == e1 {
		t.Fatalf("epoch %x kept although offsets start again", e2)
	}
}

// writeV1Buffer writes a buffer as a logship without epochs left it.
func writeV1Buffer(t *testing.T, dir string, n int) {
	t.Helper()
	pdir := filepath.Join(dir, partDirName(0))
	if err := os.MkdirAll(filepath.Join(pdir, cursorsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, metaFile), []byte("logship-buffer 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var seg [segHeaderSize]byte
	putSegHeader(seg[:], 0, 0)
	binary.LittleEndian.PutUint16(seg[8:], 1)
	binary.LittleEndian.PutUint32(seg[28:], crc32c(seg[:28]))
	data := seg[:]
	for i := 0; i < n; i++ {
		data = encodeFrame(data, uint64(i), "t", payload("v1", i, 50), 1, 0)
	}
	if err := os.WriteFile(filepath.Join(pdir, segName(0)), data, 0o644); err != nil {
		t.Fatal(err)
	}
	var cur [cursorFileSize]byte
	encodeCursor(cur[:], 1, 0)
	if err := os.WriteFile(filepath.Join(pdir, cursorsDir, "out.cur"), cur[:], 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVersion1BufferUpgrade: a buffer written before epochs opens, its
// records read as epoch 0 of the incarnation it is given, its cursor
// files still count, and new records go to a version 2 segment with
// epoch 1.
func TestVersion1BufferUpgrade(t *testing.T) {
	dir := t.TempDir()
	writeV1Buffer(t, dir, 3)
	b, err := Open(dir, WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	inc := b.Stats().Epoch >> 32
	if inc == 0 || uint32(b.Stats().Epoch) != 1 {
		t.Fatalf("upgraded buffer epoch %x", b.Stats().Epoch)
	}
	mustAppend(t, b, "t", []byte("new"), 1)
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	rs := readN(t, c, 3)
	if rs[0].Offset != 1 || rs[0].Epoch != 0 || rs[1].Epoch != 0 || rs[2].Offset != 3 || rs[2].Epoch != inc<<32|1 {
		t.Fatalf("records %d@%x %d@%x %d@%x", rs[0].Offset, rs[0].Epoch, rs[1].Offset, rs[1].Epoch, rs[2].Offset, rs[2].Epoch)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	segs := r.Partitions[0].Segments
	if len(segs) != 2 || segs[0].Version != 1 || segs[0].MaxEpoch != 0 || segs[1].Version != segVersion ||
		segs[1].MinEpoch != 1 || segs[1].FirstOffset != 3 {
		t.Fatalf("segments after the upgrade %+v", segs)
	}
	if m := readMetaT(t, dir); m.version != metaVersion || uint64(m.incarnation) != inc || !m.clean {
		t.Fatalf("META %+v", m)
	}
	if res, err := Check(dir, false); err != nil || !res.OK() {
		t.Fatalf("check: %v %+v", err, res)
	}
}

// TestInspectShowsEpoch: buffer inspect reports the incarnation, the
// epoch, whether the last stop was clean, and the epochs of each segment.
func TestInspectShowsEpoch(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, b, "t", []byte("a"), 1)
	e := b.Stats().Epoch
	killed := copyDir(t, dir)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir   string
		clean bool
		text  string
	}{
		{dir, true, fmt.Sprintf("incarnation %08x, epoch 1, stopped cleanly (the next open keeps epoch 1)", e>>32)},
		{killed, false, fmt.Sprintf("incarnation %08x, epoch 1, not stopped cleanly (the next open begins epoch 2)", e>>32)},
	} {
		if err := os.Remove(filepath.Join(tc.dir, lockFile)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		r, err := Inspect(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		if !r.MetaOK || uint64(r.Incarnation) != e>>32 || r.Epoch != 1 || r.Clean != tc.clean {
			t.Fatalf("inspect %+v", r)
		}
		if s := r.Partitions[0].Segments[0]; s.MinEpoch != 1 || s.MaxEpoch != 1 || s.Version != segVersion {
			t.Fatalf("segment %+v", s)
		}
		var out bytes.Buffer
		if err := r.WriteText(&out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.text) || !strings.Contains(out.String(), "EPOCHS") {
			t.Fatalf("inspect output lacks %q:\n%s", tc.text, out.String())
		}
	}
}

func TestMetaParse(t *testing.T) {
	for _, bad := range []string{"", "logship-buffer\n", "logship-buffer 2\n", "logship-buffer 2\nincarnation 0\nepoch 1\n",
		"logship-buffer 2\nincarnation zz\nepoch 1\n", "logship-buffer 2\nincarnation 1\nepoch 1\nwhat\n", "logship-buffer 1\nepoch 3\n"} {
		if _, err := parseMeta([]byte(bad)); err == nil {
			t.Errorf("META %q accepted", bad)
		}
	}
	m := meta{incarnation: 0xdeadbeef, epoch: 42, clean: true}
	got, err := parseMeta(m.encode())
	if err != nil || got.incarnation != m.incarnation || got.epoch != 42 || !got.clean || got.version != metaVersion {
		t.Fatalf("round trip %+v %v", got, err)
	}
}

// TestEpochWaitsForMeta: when META cannot be written at Open (a full
// filesystem), Open still succeeds; appends wait, counted as a full disk,
// until the new epoch is durable, and nothing of it is written before.
func TestEpochWaitsForMeta(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1))
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, b, "t", []byte("a"), 1)
	b.Close()
	var full atomic.Bool
	full.Store(true)
	write := func(path string, data []byte) error {
		if full.Load() {
			return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
		}
		return writeFileAtomic(path, data)
	}
	b = openT(t, dir, WithPartitions(1), withWriteMeta(write), withRetryBackoff(time.Millisecond))
	if m := readMetaT(t, dir); !m.clean {
		t.Fatal("META changed although it could not be written")
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.Append(context.Background(), "t", []byte("b"), 1)
		done <- err
	}()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if b.Stats().DiskFullErrors < 3 || !errors.Is(b.Healthy(), syscall.ENOSPC) {
			return errors.New("not waiting for META")
		}
		return nil
	})
	if n := b.Stats().Partitions[0].NextOffset; n != 1 {
		t.Fatalf("%d records written before the epoch was durable", n)
	}
	full.Store(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := readMetaT(t, dir); m.clean || m.epoch != 1 {
		t.Fatalf("META after the first append %+v", m)
	}
}
