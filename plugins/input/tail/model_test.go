package tail

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
)

// TestModelRandomized drives the input with random writes, renames,
// copytruncates, truncations, deletions and restarts, with acks that come
// late, out of order, or fail, and checks the result against a model of
// what was written: no line lost, and a line stored twice only when a
// chunk of its file was not stored (and its file was read again).
//
// TAIL_MODEL_OPS sets the number of operations (default 150; 40 with
// -short), TAIL_MODEL_SEED replays a run.
func TestModelRandomized(t *testing.T) {
	ops := 150
	if testing.Short() {
		ops = 40
	}
	if v, err := strconv.Atoi(os.Getenv("TAIL_MODEL_OPS")); err == nil && !testing.Short() {
		ops = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("TAIL_MODEL_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (TAIL_MODEL_SEED=%d replays this run)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	ackRng := rand.New(rand.NewPCG(seed, 2)) // used under the emitter's lock only

	h := newHarness(t, func(c *Config) {
		c.RotateWait = conftypes.Duration(150 * time.Millisecond)
		c.Batch.MaxEvents = 1 + rng.IntN(20)
		c.PartialFlushTimeout = 0
	})
	h.e.delayFn = func() time.Duration { return time.Duration(ackRng.IntN(3000)) * time.Microsecond }
	h.e.fail = func(int, []rec) bool { return ackRng.IntN(30) == 0 }

	m := newModel(t, h, rng)
	h.start()
	running := true
	for i := 0; i < ops; i++ {
		switch op := rng.IntN(100); {
		case op < 50:
			m.write(m.anyName(), 1+rng.IntN(15))
		case op < 60 && running:
			m.renameRotate(m.anyName())
		case op < 68 && running:
			m.copyTruncate(m.anyName())
		case op < 73 && running:
			m.truncate(m.anyName())
		case op < 78 && running:
			m.remove(m.anyName())
		case op < 82:
			for _, g := range m.gens {
				g.note("running=%v -> %v", running, !running)
			}
			if running {
				m.settleDeleted()
				h.stop()
			} else {
				h.start()
			}
			running = !running
		default:
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond) // let the reader run
		}
	}
	if !running {
		h.start()
	}
	m.check(30 * time.Second)
}

// modelGen is one content generation: a file's lines between two
// truncations (or its creation and a truncation).
type modelGen struct {
	id      int
	lines   []string
	size    int64
	history []string
}

func (g *modelGen) note(format string, args ...any) {
	g.history = append(g.history, fmt.Sprintf("%d:", len(g.lines))+fmt.Sprintf(format, args...))
}

type modelFile struct {
	f   *os.File
	gen *modelGen
}

type model struct {
	t       *testing.T
	h       *harness
	rng     *rand.Rand
	gens    []*modelGen
	files   map[string]*modelFile // by name, the files still under a matched name
	genOf   map[string]*modelGen  // line -> its generation
	rotated int
	opened  []*os.File
	deleted []*modelGen // deleted while open: only the open descriptor reaches them
}

func newModel(t *testing.T, h *harness, rng *rand.Rand) *model {
	m := &model{t: t, h: h, rng: rng, files: map[string]*modelFile{}, genOf: map[string]*modelGen{}}
	t.Cleanup(func() {
		for _, f := range m.opened {
			f.Close()
		}
	})
	return m
}

func (m *model) anyName() string { return []string{"a.log", "b.log", "c.log"}[m.rng.IntN(3)] }

func (m *model) newGen() *modelGen {
	g := &modelGen{id: len(m.gens)}
	m.gens = append(m.gens, g)
	return g
}

func (m *model) file(name string) *modelFile {
	mf := m.files[name]
	if mf == nil {
		f, err := os.OpenFile(m.h.path(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			m.t.Fatal(err)
		}
		m.opened = append(m.opened, f)
		mf = &modelFile{f: f, gen: m.newGen()}
		m.files[name] = mf
		mf.gen.note("created %s", name)
	}
	return mf
}

func (m *model) writeTo(f *os.File, g *modelGen, n int) {
	var b strings.Builder
	for range n {
		l := fmt.Sprintf("g%04d-%05d-", g.id, len(g.lines))
		l += strings.Repeat("m", 40-len(l))
		g.lines = append(g.lines, l)
		m.genOf[l] = g
		b.WriteString(l + "\n")
	}
	if _, err := f.WriteString(b.String()); err != nil {
		m.t.Fatal(err)
	}
	g.size += int64(b.Len())
}

func (m *model) write(name string, n int) {
	mf := m.file(name)
	m.writeTo(mf.f, mf.gen, n)
}

// observed waits until the input has looked at the file since its content
// last changed: it follows the inode and knows (a prefix of) the current
// content. A file rotated before anyone saw it, or rotated twice between
// two looks, leaves no trace to follow; real rotations are far apart.
func (m *model) observed(name string) {
	p := m.h.path(name)
	testutil.CheckFor(m.t, 10*time.Second, func() error {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		m.h.in.mu.Lock()
		t := m.h.in.files[fileKeyOf(fi)]
		m.h.in.mu.Unlock()
		if t == nil {
			return fmt.Errorf("%s not followed", name)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		var scratch [fingerprintBytes]byte
		head, err := readHead(f, fi.Size(), scratch[:])
		if err != nil {
			return err
		}
		t.mu.Lock()
		fp := t.fp
		t.mu.Unlock()
		if !fp.matches(head) || len(head) > 0 && fp.n == 0 {
			t.mu.Lock()
			defer t.mu.Unlock()
			return fmt.Errorf("%s: the input has not seen its current content (fp %v, head %d, gone %v, copyOf %v, out %d, failed %v, gen %d, committed %d)",
				name, fp, len(head), t.gone, t.copyOf != nil, t.outstanding, t.failed.Load(), t.gen, t.committed)
		}
		return nil
	})
}

// stored reports whether every line of g is stored.
func (m *model) stored(g *modelGen) bool {
	have := map[string]bool{}
	for _, l := range m.h.e.logs() {
		have[l] = true
	}
	for _, l := range g.lines {
		if !have[l] {
			return false
		}
	}
	return true
}

func (m *model) renameRotate(name string) {
	mf := m.files[name]
	if mf == nil {
		return
	}
	m.observed(name)
	m.rotated++
	if err := os.Rename(m.h.path(name), m.h.path(fmt.Sprintf("%s.%d", name, m.rotated))); err != nil {
		m.t.Fatal(err)
	}
	mf.gen.note("renamed to %s.%d", name, m.rotated)
	m.writeTo(mf.f, mf.gen, m.rng.IntN(4)) // written to the old file after the rename
	delete(m.files, name)
	m.write(name, 1+m.rng.IntN(5))
}

func (m *model) copyTruncate(name string) {
	mf := m.files[name]
	if mf == nil {
		return
	}
	m.observed(name)
	if mf.gen.size < fingerprintBytes {
		// A copy shorter than the fingerprint cannot be recognised:
		// only what was read before the truncation is safe.
		testutil.CheckFor(m.t, 10*time.Second, func() error {
			if !m.stored(mf.gen) {
				return fmt.Errorf("gen %d not stored yet", mf.gen.id)
			}
			return nil
		})
	}
	m.rotated++
	copyFile(m.t, m.h.path(name), m.h.path(fmt.Sprintf("%s.%d", name, m.rotated)))
	if err := os.Truncate(m.h.path(name), 0); err != nil {
		m.t.Fatal(err)
	}
	mf.gen.note("copytruncated to %s.%d", name, m.rotated)
	mf.gen = m.newGen()
	mf.gen.note("after copytruncate of %s", name)
}

func (m *model) truncate(name string) {
	mf := m.files[name]
	if mf == nil {
		return
	}
	// What is truncated before it is read is lost by nature.
	testutil.CheckFor(m.t, 10*time.Second, func() error {
		if !m.stored(mf.gen) {
			return fmt.Errorf("gen %d not stored yet", mf.gen.id)
		}
		return nil
	})
	if err := os.Truncate(m.h.path(name), 0); err != nil {
		m.t.Fatal(err)
	}
	mf.gen.note("truncated")
	mf.gen = m.newGen()
	mf.gen.note("after truncate of %s", name)
}

func (m *model) remove(name string) {
	mf := m.files[name]
	if mf == nil {
		return
	}
	m.observed(name)
	if err := os.Remove(m.h.path(name)); err != nil {
		m.t.Fatal(err)
	}
	mf.gen.note("deleted")
	m.writeTo(mf.f, mf.gen, m.rng.IntN(3)) // written after the deletion, through the open file
	m.deleted = append(m.deleted, mf.gen)
	delete(m.files, name)
}

// settleDeleted waits, before a stop, until deleted files are read: after
// a restart nothing leads to them any more.
func (m *model) settleDeleted() {
	for _, g := range m.deleted {
		testutil.CheckFor(m.t, 10*time.Second, func() error {
			if !m.stored(g) {
				return fmt.Errorf("deleted gen %d not stored yet", g.id)
			}
			return nil
		})
	}
	m.deleted = nil
}

func (m *model) check(timeout time.Duration) {
	var all []string
	for _, g := range m.gens {
		all = append(all, g.lines...)
	}
	testutil.CheckFor(m.t, timeout, func() error {
		have := map[string]bool{}
		for _, l := range m.h.e.logs() {
			have[l] = true
		}
		var missing []string
		for _, l := range all {
			if !have[l] {
				missing = append(missing, l)
			}
		}
		if len(missing) > 0 {
			g := m.genOf[missing[0]]
			failedChunks := map[int]bool{}
			m.h.e.mu.Lock()
			for _, fc := range m.h.e.failed {
				failedChunks[fc[0].chunk] = true
			}
			occ := map[string][]string{}
			for _, r := range m.h.e.emitted {
				occ[r.log()] = append(occ[r.log()], fmt.Sprintf("c%d%s", r.chunk, map[bool]string{true: "F"}[failedChunks[r.chunk]]))
			}
			m.h.e.mu.Unlock()
			var desc []string
			for _, l := range g.lines {
				desc = append(desc, fmt.Sprintf("%s:%v", l[:11], occ[l]))
			}
			return fmt.Errorf("%d of %d lines missing: %s; gen %d: %v, history %q", len(missing), len(all), head(missing), g.id, desc, g.history)
		}
		return nil
	})
	// A duplicate needs a chunk of its generation that was not stored and
	// emitted before the duplicate's second copy.
	failedAt := map[*modelGen][]int{}
	m.h.e.mu.Lock()
	for _, fc := range m.h.e.failed {
		for _, r := range fc {
			if g := m.genOf[r.log()]; g != nil {
				failedAt[g] = append(failedAt[g], r.chunk)
			}
		}
	}
	m.h.e.mu.Unlock()
	copies := map[string][]int{}
	for _, r := range m.h.e.records() {
		copies[r.log()] = append(copies[r.log()], r.chunk)
	}
	dups := 0
	for l, cs := range copies {
		g := m.genOf[l]
		if g == nil {
			m.t.Errorf("unexpected line %q", l)
			continue
		}
		if len(cs) < 2 {
			continue
		}
		dups += len(cs) - 1
		second := max(cs[0], cs[1])
		ok := false
		for _, f := range failedAt[g] {
			if f < second {
				ok = true
			}
		}
		if !ok {
			m.t.Errorf("%q stored %d times (chunks %v) with no failed chunk of its file before", l, len(cs), cs)
		}
	}
	m.h.e.mu.Lock()
	failed := len(m.h.e.failed)
	m.h.e.mu.Unlock()
	m.t.Logf("%d generations, %d lines, %d duplicates, %d chunks not stored, %d rotations", len(m.gens), len(all), dups, failed, m.rotated)
}
