package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Problem is one thing Check found wrong.
type Problem struct {
	Partition int
	File      string // relative to the buffer directory
	Pos       int64  // byte position in the file, -1 when not about a position
	Kind      string // torn-tail, corrupt, bad-header, short-header, gap, overlap, bad-version, bad-cursor, cursor-range, stray, not-a-file
	Records   uint64 // records lost, when known
	Bytes     int64
	Detail    string
	Fixed     bool // repaired by Check(dir, true)
	FixedHow  string
}

// CheckReport is the result of Check.
type CheckReport struct {
	Dir        string
	Partitions int
	Segments   int
	Records    uint64 // valid records
	Events     uint64
	KnownLost  uint64 // offsets marked lost by an earlier repair
	Cursors    int
	Problems   []Problem
}

// OK reports whether the log is clean: no problem found, or every problem
// repaired.
func (r *CheckReport) OK() bool {
	for _, p := range r.Problems {
		if !p.Fixed {
			return false
		}
	}
	return true
}

// WriteText writes the report for a person.
func (r *CheckReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("buffer %s: %d partitions, %d segments, %d records, %d events, %d cursor files\n",
		r.Dir, r.Partitions, r.Segments, r.Records, r.Events, r.Cursors)
	if r.KnownLost > 0 {
		ew.printf("%d records were marked lost by an earlier repair\n", r.KnownLost)
	}
	fixed := 0
	for _, p := range r.Problems {
		where := p.File
		if p.Pos >= 0 {
			where = fmt.Sprintf("%s@%d", p.File, p.Pos)
		}
		ew.printf("%-13s p%d %s: %s", p.Kind, p.Partition, where, p.Detail)
		if p.Fixed {
			fixed++
			ew.printf(" [repaired: %s]", p.FixedHow)
		}
		ew.printf("\n")
	}
	switch {
	case len(r.Problems) == 0:
		ew.printf("OK: every record verified\n")
	case r.OK():
		ew.printf("OK after repair: %d problems repaired\n", fixed)
	default:
		ew.printf("NOT OK: %d problems, %d repaired (run with --repair to repair)\n", len(r.Problems), fixed)
	}
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// offlineOpen checks that dir is a buffer and that no process has it open.
// It returns the lock to release.
func offlineOpen(dir string) (*os.File, []int, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("broker: %w", err)
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("broker: %s is not a directory", dir)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		_ = lock.Close()
		return nil, nil, fmt.Errorf("broker: %w", err)
	}
	var parts []int
	for _, e := range ents {
		if id, ok := parsePartDirName(e.Name()); ok && e.IsDir() {
			parts = append(parts, id)
		}
	}
	slices.Sort(parts)
	return lock, parts, nil
}

// Check verifies every record of every segment offline (the process must
// not be running): magic, length, CRC, offsets increasing and contiguous
// between segments, segment headers, cursor files. With repair it cuts torn
// tails, rewrites segments with corrupted spans replaced by lost markers
// (temp file, fsync, rename), rewrites bad headers, clamps or removes bad
// cursor files and removes stray temp files, so that Open sees a clean log.
func Check(dir string, repair bool) (*CheckReport, error) {
	lock, parts, err := offlineOpen(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	r := &CheckReport{Dir: dir, Partitions: len(parts)}
	for _, id := range parts {
		if err := checkPartition(r, dir, id, repair); err != nil {
			return r, err
		}
	}
	return r, nil
}

type segCheck struct {
	name string
	path string
	base uint64
	res  scanResult
}

func checkPartition(r *CheckReport, dir string, id int, repair bool) error {
	pdir := filepath.Join(dir, partDirName(id))
	rel := func(name string) string { return filepath.Join(partDirName(id), name) }
	ents, err := os.ReadDir(pdir)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	var segs []segCheck
	for _, e := range ents {
		name := e.Name()
		if base, ok := parseSegName(name); ok && e.Type().IsRegular() {
			segs = append(segs, segCheck{name: name, path: filepath.Join(pdir, name), base: base})
		} else if ok {
			pr := Problem{Partition: id, File: rel(name), Pos: -1, Kind: "not-a-file",
				Detail: fmt.Sprintf("segment path is a %s, not a file: its records are lost", e.Type())}
			if repair && setAsideQuiet(filepath.Join(pdir, name)) {
				pr.Fixed, pr.FixedHow = true, "set aside as "+name+".damaged-*"
			}
			r.Problems = append(r.Problems, pr)
		} else if strings.HasSuffix(name, tmpSuffix) {
			pr := Problem{Partition: id, File: rel(name), Pos: -1, Kind: "stray", Detail: "leftover temp file"}
			if repair && os.Remove(filepath.Join(pdir, name)) == nil {
				pr.Fixed, pr.FixedHow = true, "removed"
			}
			r.Problems = append(r.Problems, pr)
		}
	}
	slices.SortFunc(segs, func(a, b segCheck) int { return compareU64(a.base, b.base) })
	for i := range segs {
		s := &segs[i]
		f, err := os.Open(s.path)
		if err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		st, err := f.Stat()
		if err == nil {
			s.res, err = scanSegment(f, st.Size(), s.base, nil)
		}
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("broker: scan %s: %w", s.path, err)
		}
	}
	r.Segments += len(segs)
	next := uint64(0)
	for i := range segs {
		s := &segs[i]
		res := s.res
		last := i == len(segs)-1
		add := func(p Problem) *Problem {
			p.Partition, p.File = id, rel(s.name)
			r.Problems = append(r.Problems, p)
			return &r.Problems[len(r.Problems)-1]
		}
		if res.headerErr != nil {
			add(Problem{Pos: 0, Kind: "bad-version", Detail: res.headerErr.Error()})
			continue
		}
		if res.staleHeader && last {
			// a reused segment file whose new header never reached the
			// disk: nothing of it was acknowledged, and Open starts it
			// again, empty
			res.records, res.events, res.next, res.bad = 0, 0, s.base, nil
		}
		r.Records += uint64(res.records)
		r.Events += res.events
		r.KnownLost += res.knownLost
		if i > 0 && s.base < next {
			add(Problem{Pos: -1, Kind: "overlap", Detail: fmt.Sprintf("base offset %d below the end of the previous segment (%d)", s.base, next)})
		}
		endOff := res.next // where offsets of this segment end
		var want uint64    // where they must end: the next segment's base
		if !last {
			want = segs[i+1].base
		}
		var fixes []string
		needRewrite := false
		var probs []*Problem
		if res.shortHead {
			probs = append(probs, add(Problem{Pos: 0, Kind: "short-header", Bytes: res.fileSize, Detail: fmt.Sprintf("file of %d bytes is shorter than a segment header", res.fileSize)}))
			needRewrite = true
		} else if res.headerBad || res.staleHeader && !last {
			probs = append(probs, add(Problem{Pos: 0, Kind: "bad-header", Detail: "segment header does not validate (magic, CRC or base offset)"}))
			needRewrite = true
		}
		for _, b := range res.bad {
			switch {
			case b.torn && res.reused && (last || b.firstLost >= want):
				// past the records of a reused segment file: bytes of its
				// earlier use, written over by later appends (or cut when
				// it was sealed); nothing is lost
			case b.torn && last:
				probs = append(probs, add(Problem{Pos: b.start, Kind: "torn-tail", Bytes: b.end - b.start,
					Detail: fmt.Sprintf("%d bytes after the last valid record (offset %d on) are not a complete record", b.end-b.start, b.firstLost)}))
				fixes = append(fixes, "truncated")
			case b.torn:
				lost := uint64(0)
				if want > b.firstLost {
					lost = want - b.firstLost
				}
				probs = append(probs, add(Problem{Pos: b.start, Kind: "corrupt", Bytes: b.end - b.start, Records: lost,
					Detail: fmt.Sprintf("%d bytes at the end of a sealed segment do not validate: offsets %d..%d lost", b.end-b.start, b.firstLost, b.firstLost+lost)}))
				needRewrite = true
			default:
				probs = append(probs, add(Problem{Pos: b.start, Kind: "corrupt", Bytes: b.end - b.start, Records: b.lost,
					Detail: fmt.Sprintf("%d bytes do not validate: %d records lost (offsets %d..%d), skipped", b.end-b.start, b.lost, b.firstLost, b.firstLost+b.lost)}))
				needRewrite = true
			}
		}
		hasTornSealed := len(res.bad) > 0 && res.bad[len(res.bad)-1].torn && !last
		if !last && endOff < want && !hasTornSealed {
			probs = append(probs, add(Problem{Pos: -1, Kind: "gap", Records: want - endOff,
				Detail: fmt.Sprintf("offsets %d..%d are missing before the next segment", endOff, want)}))
			needRewrite = true
		}
		if !last && endOff > want {
			add(Problem{Pos: -1, Kind: "overlap", Detail: fmt.Sprintf("records up to offset %d run past the next segment's base %d", endOff, want)})
		}
		next = max(endOff, want)
		if last {
			next = endOff
		}
		if !repair || len(probs) == 0 {
			continue
		}
		how := ""
		if needRewrite {
			if err := rewriteSegment(s, id, last, want); err != nil {
				return err
			}
			how = "segment rewritten, bad spans replaced by lost markers"
		} else if len(fixes) > 0 {
			if err := truncateFile(s.path, res.validEnd); err != nil {
				return err
			}
			how = "torn tail truncated"
		}
		if err := syncDir(pdir); err != nil {
			return err
		}
		for _, p := range probs {
			p.Fixed, p.FixedHow = true, how
		}
	}
	first := uint64(0)
	if len(segs) > 0 {
		first = segs[0].base
	}
	return checkCursors(r, pdir, id, first, next, repair)
}

// setAsideQuiet is setAside for the offline tools, which report instead
// of logging.
func setAsideQuiet(path string) bool {
	to := fmt.Sprintf("%s.damaged-%d", path, time.Now().UnixNano())
	if os.Rename(path, to) != nil {
		return false
	}
	return syncDir(filepath.Dir(path)) == nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// rewriteSegment copies the valid frames of a segment to a new file behind
// a fresh header, with a lost marker where bad spans were, and renames it
// over the original.
func rewriteSegment(s *segCheck, partition int, last bool, want uint64) error {
	src, err := os.Open(s.path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := s.path + tmpSuffix
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("broker: rewrite %s: %w", s.path, err)
	}
	var hdr [segHeaderSize]byte
	putSegHeader(hdr[:], partition, s.base)
	if _, err := dst.Write(hdr[:]); err != nil {
		return fail(err)
	}
	marker := func(off, count uint64) error {
		if count == 0 {
			return nil
		}
		_, err := dst.Write(encodeFrame(nil, off, "", nil, uint32(count), flagLost))
		return err
	}
	var buf []byte
	expect := s.base
	if !s.res.shortHead {
		_, err = scanSegment(src, s.res.fileSize, s.base, func(pos int64, h frameHeader) error {
			if h.offset > expect {
				if err := marker(expect, h.offset-expect); err != nil {
					return err
				}
			}
			if cap(buf) < int(h.size()) {
				buf = make([]byte, h.size())
			}
			b := buf[:h.size()]
			if _, err := src.ReadAt(b, pos); err != nil {
				return err
			}
			if _, err := dst.Write(b); err != nil {
				return err
			}
			if h.flags&flagLost != 0 {
				expect = h.offset + uint64(h.count)
			} else {
				expect = h.offset + 1
			}
			return nil
		})
		if err != nil {
			return fail(err)
		}
	}
	if !last && want > expect {
		if err := marker(expect, want-expect); err != nil {
			return fail(err)
		}
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, s.path)
}

func checkCursors(r *CheckReport, pdir string, id int, first, next uint64, repair bool) error {
	cdir := filepath.Join(pdir, cursorsDir)
	ents, err := os.ReadDir(cdir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(cdir, name)
		relp := filepath.Join(partDirName(id), cursorsDir, name)
		if strings.HasSuffix(name, tmpSuffix) {
			p := Problem{Partition: id, File: relp, Pos: -1, Kind: "stray", Detail: "leftover temp file"}
			if repair && os.Remove(path) == nil {
				p.Fixed, p.FixedHow = true, "removed"
			}
			r.Problems = append(r.Problems, p)
			continue
		}
		if !strings.HasSuffix(name, curSuffix) {
			continue
		}
		r.Cursors++
		data, derr := os.ReadFile(path)
		var committed uint64
		if derr == nil {
			committed, _, derr = decodeCursor(data)
		}
		if derr != nil {
			p := Problem{Partition: id, File: relp, Pos: -1, Kind: "bad-cursor",
				Detail: derr.Error() + "; the cursor would restart at the oldest retained record"}
			if !e.Type().IsRegular() {
				if repair && setAsideQuiet(path) {
					p.Fixed, p.FixedHow = true, "set aside as "+name+".damaged-*"
				}
			} else if repair && os.Remove(path) == nil && syncDir(cdir) == nil {
				p.Fixed, p.FixedHow = true, "removed"
			}
			r.Problems = append(r.Problems, p)
			continue
		}
		clamped := committed
		switch {
		case committed > next:
			clamped = next
		case committed < first:
			clamped = first
		}
		if clamped != committed {
			p := Problem{Partition: id, File: relp, Pos: -1, Kind: "cursor-range",
				Detail: fmt.Sprintf("committed offset %d is outside the retained offsets [%d, %d]", committed, first, next)}
			if repair && writeCursorFile(path, clamped) == nil && syncDir(cdir) == nil {
				p.Fixed, p.FixedHow = true, fmt.Sprintf("clamped to %d", clamped)
			}
			r.Problems = append(r.Problems, p)
		}
	}
	return nil
}

// InspectReport describes a buffer directory: partitions, segments and
// cursors with their lag.
type InspectReport struct {
	Dir string
	// From META (see "Epochs" in doc.go): the buffer's random incarnation
	// id, the frame epoch of the records appended since the last Open, and
	// whether the last stop was clean (the next Open keeps the epoch) or
	// not (it begins a new one). MetaOK is false when META is missing or
	// unreadable (the next Open makes a new incarnation).
	MetaOK      bool
	Incarnation uint32
	Epoch       uint32
	Clean       bool
	Partitions  []InspectPartition
	Cursors     []InspectCursor // by name, then partition
}

// InspectPartition describes one partition.
type InspectPartition struct {
	Partition   int
	Bytes       int64
	FirstOffset uint64
	NextOffset  uint64
	Records     int64
	Events      uint64
	Segments    []InspectSegment
	// Spares are the consumed segment files kept to be written over as
	// the next segment (WithSegmentReuse); Bytes counts them.
	Spares []InspectSegment
}

// InspectSegment describes one segment file.
type InspectSegment struct {
	Name        string
	Bytes       int64
	Records     int64
	Events      uint64
	FirstOffset uint64 // base offset when empty
	LastOffset  uint64 // meaningful when Records > 0
	Problems    int    // bad spans or header problems (see Check)
	Version     uint16 // segment format version, 0 when the header is bad
	// frame epochs of its records (meaningful when Records > 0); version
	// 1 segments hold epoch 0 only
	MinEpoch, MaxEpoch uint32
}

// InspectCursor describes one cursor of one partition.
type InspectCursor struct {
	Name      string
	Partition int
	Committed uint64
	Lag       uint64 // records from Committed to the partition's end
	Bad       bool   // the cursor file does not validate
}

// Inspect reads a buffer directory offline (the process must not be
// running) and describes it.
func Inspect(dir string) (*InspectReport, error) {
	lock, parts, err := offlineOpen(dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	r := &InspectReport{Dir: dir}
	if data, err := os.ReadFile(filepath.Join(dir, metaFile)); err == nil {
		if m, err := parseMeta(data); err == nil {
			r.MetaOK, r.Incarnation, r.Epoch, r.Clean = true, m.incarnation, m.epoch, m.clean
		}
	}
	for _, id := range parts {
		pdir := filepath.Join(dir, partDirName(id))
		ents, err := os.ReadDir(pdir)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		ip := InspectPartition{Partition: id}
		for _, e := range ents {
			if _, ok := parseSpareName(e.Name()); ok && e.Type().IsRegular() {
				if st, err := e.Info(); err == nil {
					ip.Spares = append(ip.Spares, InspectSegment{Name: e.Name(), Bytes: st.Size()})
					ip.Bytes += st.Size()
				}
				continue
			}
			base, ok := parseSegName(e.Name())
			if !ok || !e.Type().IsRegular() {
				continue
			}
			f, err := os.Open(filepath.Join(pdir, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("broker: %w", err)
			}
			st, err := f.Stat()
			var res scanResult
			var lastOff uint64
			minE, maxE := uint32(0), uint32(0)
			seen := false
			if err == nil {
				res, err = scanSegment(f, st.Size(), base, func(_ int64, h frameHeader) error {
					if h.flags&flagLost == 0 {
						lastOff = h.offset
						if !seen || h.epoch < minE {
							minE = h.epoch
						}
						maxE = max(maxE, h.epoch)
						seen = true
					}
					return nil
				})
			}
			_ = f.Close()
			if err != nil {
				return nil, fmt.Errorf("broker: scan %s: %w", e.Name(), err)
			}
			problems := 0
			for _, b := range res.bad {
				if !b.torn || !res.reused { // a reused file's earlier bytes are no problem
					problems++
				}
			}
			is := InspectSegment{Name: e.Name(), Bytes: res.fileSize, Records: res.records, Events: res.events,
				FirstOffset: res.firstOff, LastOffset: lastOff, Problems: problems,
				Version: res.version, MinEpoch: minE, MaxEpoch: maxE}
			if res.headerBad || res.shortHead || res.headerErr != nil {
				is.Problems++
			}
			ip.Segments = append(ip.Segments, is)
			ip.Bytes += res.fileSize
			ip.Records += res.records
			ip.Events += res.events
			ip.NextOffset = max(ip.NextOffset, res.next)
		}
		slices.SortFunc(ip.Segments, func(a, b InspectSegment) int { return strings.Compare(a.Name, b.Name) })
		if len(ip.Segments) > 0 {
			b, _ := parseSegName(ip.Segments[0].Name)
			ip.FirstOffset = b
		}
		r.Partitions = append(r.Partitions, ip)

		cdir := filepath.Join(pdir, cursorsDir)
		cents, _ := os.ReadDir(cdir)
		for _, e := range cents {
			if !strings.HasSuffix(e.Name(), curSuffix) {
				continue
			}
			name, ok := unescapeCursorName(strings.TrimSuffix(e.Name(), curSuffix))
			if !ok {
				continue
			}
			ic := InspectCursor{Name: name, Partition: id}
			data, err := os.ReadFile(filepath.Join(cdir, e.Name()))
			if err == nil {
				ic.Committed, _, err = decodeCursor(data)
			}
			if err != nil {
				ic.Bad = true
			} else if ip.NextOffset > ic.Committed {
				ic.Lag = ip.NextOffset - ic.Committed
			}
			r.Cursors = append(r.Cursors, ic)
		}
	}
	slices.SortFunc(r.Cursors, func(a, b InspectCursor) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Partition - b.Partition
	})
	return r, nil
}

// WriteText writes the report as tables.
func (r *InspectReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	var total int64
	nseg := 0
	for _, p := range r.Partitions {
		total += p.Bytes
		nseg += len(p.Segments)
	}
	ew.printf("buffer %s: %d partitions, %d segments, %s\n", r.Dir, len(r.Partitions), nseg, humanBytes(total))
	switch {
	case !r.MetaOK:
		ew.printf("META missing or unreadable: the next open gives the buffer a new incarnation\n\n")
	case r.Incarnation == 0:
		ew.printf("format version 1 (no epochs): the next open gives the buffer an incarnation and epoch 1\n\n")
	case r.Clean:
		ew.printf("incarnation %08x, epoch %d, stopped cleanly (the next open keeps epoch %d)\n\n", r.Incarnation, r.Epoch, r.Epoch)
	default:
		ew.printf("incarnation %08x, epoch %d, not stopped cleanly (the next open begins epoch %d)\n\n", r.Incarnation, r.Epoch, r.Epoch+1)
	}
	tw := tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "PARTITION\tSEGMENTS\tBYTES\tRECORDS\tEVENTS\tFIRST OFFSET\tNEXT OFFSET\n")
	for _, p := range r.Partitions {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\n", p.Partition, len(p.Segments), humanBytes(p.Bytes), p.Records, p.Events, p.FirstOffset, p.NextOffset)
	}
	_ = tw.Flush()
	ew.printf("\n")
	tw = tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "PARTITION\tSEGMENT\tBYTES\tRECORDS\tEVENTS\tOFFSETS\tEPOCHS\tPROBLEMS\n")
	for _, p := range r.Partitions {
		for _, s := range p.Segments {
			offs, epochs := "-", "-"
			if s.Records > 0 {
				offs = fmt.Sprintf("%d..%d", s.FirstOffset, s.LastOffset)
				epochs = fmt.Sprint(s.MinEpoch)
				if s.MaxEpoch != s.MinEpoch {
					epochs = fmt.Sprintf("%d..%d", s.MinEpoch, s.MaxEpoch)
				}
			}
			probs := "-"
			if s.Problems > 0 {
				probs = fmt.Sprintf("%d (run buffer check)", s.Problems)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Partition, s.Name, humanBytes(s.Bytes), s.Records, s.Events, offs, epochs, probs)
		}
		for _, s := range p.Spares {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t-\tspare\t-\t-\n", p.Partition, s.Name, humanBytes(s.Bytes))
		}
	}
	_ = tw.Flush()
	ew.printf("\n")
	if len(r.Cursors) == 0 {
		ew.printf("no cursors\n")
		return ew.err
	}
	tw = tabwriter.NewWriter(ew, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "CURSOR\tPARTITION\tCOMMITTED\tLAG\n")
	for _, c := range r.Cursors {
		if c.Bad {
			fmt.Fprintf(tw, "%s\t%d\tunreadable\t-\n", c.Name, c.Partition)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", c.Name, c.Partition, c.Committed, c.Lag)
	}
	_ = tw.Flush()
	return ew.err
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
