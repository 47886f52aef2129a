package kubernetes

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/ratelog"
	"github.com/logship/logship/pipeline"
)

// Factory registers the kubernetes filter.
func Factory() pipeline.Factory {
	return pipeline.NewFilterFactory("kubernetes", defaultConfig,
		func(set pipeline.Settings, cfg *Config) (pipeline.Filter, error) {
			return New(set, cfg)
		})
}

var _ pipeline.Filter = (*Filter)(nil)

// Filter adds Kubernetes metadata to the records of container log files.
// It is safe for concurrent use.
type Filter struct {
	cfg      *Config
	host     string
	key      []byte
	keyEnc   []byte // the msgpack str of cfg.Key
	pathKey  []byte
	src      *source // nil for source: none
	met      *metrics
	log      *zap.Logger
	rl       *ratelog.Logger
	resolved resolvedCache
}

// New creates the filter. No request is made until records come.
func New(set pipeline.Settings, cfg *Config) (*Filter, error) {
	log := set.Logger
	if log == nil {
		log = zap.NewNop()
	}
	node := cfg.NodeName
	if node == "" {
		node = set.NodeName
	}
	f := &Filter{
		cfg: cfg, host: node,
		key:     []byte(cfg.Key),
		keyEnc:  mpack.AppendString(nil, cfg.Key),
		pathKey: []byte(cfg.PathKey),
		met:     newMetrics(set, cfg.Source),
		log:     log, rl: ratelog.New(log, 30*time.Second),
	}
	f.resolved.m = map[string]*resolved{}
	if cfg.Source != SourceNone {
		if cfg.Source == SourceAPIServer && node == "" {
			return nil, errors.New("source api_server needs the node's name: set node_name, service.node_name or NODE_NAME")
		}
		src, err := newSource(cfg, node, f.met, log)
		if err != nil {
			return nil, err
		}
		f.src = src
	}
	return f, nil
}

// Close stops a request in flight (or the watch) and waits for it. The
// pipeline calls it when it stops and when a reload drops the filter; a
// chunk an input still passes through it then keeps what the cache holds,
// else the file-name fields.
func (f *Filter) Close() error {
	if f.src != nil {
		f.src.close()
	}
	return nil
}

// stats are what one pass over a chunk found.
type stats struct {
	full, fileOnly, none, present, notMap int
	missing                               []string // pods not in the cache, each once
}

// maxMissingPerChunk bounds the pods of one chunk asked for.
const maxMissingPerChunk = 64

// Filter implements pipeline.Filter: every record that names a container
// log file (in path_key, or by its tag) gets the key with its metadata. A
// chunk with a pod the cache does not hold may wait for the list that
// brings it, at most request_timeout (see the package doc).
func (f *Filter) Filter(c pipeline.Chunk) (pipeline.Chunk, error) {
	snap := f.snapshot()
	out, st, err := f.enrich(c, snap)
	if err != nil {
		f.met.none.Add(float64(c.Count))
		f.rl.Warn("malformed", "kubernetes metadata: a chunk's entries do not parse; passed unchanged", zap.String("tag", c.Tag), zap.Error(err))
		return c, nil
	}
	if f.src != nil {
		f.met.misses.Add(float64(len(st.missing)))
		// At most two lists are waited for (one in flight may have been
		// sent before the pod started), twice request_timeout in all.
		var deadline time.Time
		for round := 0; round < 2; round++ {
			now := time.Now()
			ch, wait := f.src.want(st.missing, now)
			if ch == nil || len(st.missing) == 0 {
				break
			}
			if deadline.IsZero() {
				deadline = now.Add(2 * f.cfg.RequestTimeout.D())
			}
			if wait = min(wait, deadline.Sub(now)); wait <= 0 {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-ch:
			case <-t.C:
			}
			t.Stop()
			next := f.snapshot()
			if next == snap {
				break
			}
			snap = next
			if out, st, err = f.enrich(c, snap); err != nil {
				return c, nil // cannot be: it parsed before
			}
		}
	}
	f.count(&st)
	return out, nil
}

func (f *Filter) snapshot() *snapshot {
	if f.src == nil {
		return nil
	}
	return f.src.snap.Load()
}

func (f *Filter) count(st *stats) {
	add := func(c interface{ Add(float64) }, n int) {
		if n > 0 {
			c.Add(float64(n))
		}
	}
	add(f.met.full, st.full)
	add(f.met.fileOnly, st.fileOnly)
	add(f.met.none, st.none)
	add(f.met.present, st.present)
	add(f.met.notMap, st.notMap)
}

// enrich adds the metadata to every record of c that names a container
// log file, in one pass: each entry's array header and time are copied,
// the record's map header is written again with one more pair, its pairs
// are copied as they are and the metadata pair appended. Records are
// walked to their end once (SkipValue), nothing is decoded but the keys
// and the path. c is returned itself when no record changed.
func (f *Filter) enrich(c pipeline.Chunk, snap *snapshot) (pipeline.Chunk, stats, error) {
	var st stats
	var out []byte
	in := c.Entries
	pos := 0 // in[:pos] is done; copied into out when out != nil
	var memo struct {
		path []byte
		r    *resolved
		enc  []byte
	}
	var tagR *resolved
	var tagEnc []byte
	for pos < len(in) {
		e := in[pos:]
		n, hdr, err := mpack.ReadArrayHeader(e)
		if err != nil {
			return c, st, err
		}
		if n != 2 {
			return c, st, fmt.Errorf("%w: entry is an array of %d, want [time, record]", mpack.ErrMalformed, n)
		}
		tn, err := mpack.SkipValue(e[hdr:])
		if err != nil {
			return c, st, err
		}
		recAt := hdr + tn
		rec := e[recAt:]
		pairs, mh, err := mpack.ReadMapHeader(rec)
		if err != nil {
			rn, err := mpack.SkipValue(rec)
			if err != nil {
				return c, st, err
			}
			st.notMap++
			if out != nil {
				out = append(out, e[:recAt+rn]...)
			}
			pos += recAt + rn
			continue
		}
		// Walk the pairs: find the path and whether the key is there.
		p := mh
		var path []byte
		hasKey, hasPath := false, false
		for range pairs {
			kn := 0
			if p < len(rec) && isStr(rec[p]) {
				k, n, err := mpack.ReadString(rec[p:])
				if err != nil {
					return c, st, err
				}
				kn = n
				switch {
				case bytes.Equal(k, f.key):
					hasKey = true
				case bytes.Equal(k, f.pathKey):
					if v, _, err := mpack.ReadString(rec[p+kn:]); err == nil {
						path, hasPath = v, true
					}
				}
			} else if kn, err = mpack.SkipValue(rec[p:]); err != nil {
				return c, st, err
			}
			vn, err := mpack.SkipValue(rec[p+kn:])
			if err != nil {
				return c, st, err
			}
			p += kn + vn
		}
		recLen := p
		var r *resolved
		var enc []byte
		switch {
		case hasKey:
			st.present++
		case hasPath:
			if memo.r == nil || !bytes.Equal(memo.path, path) {
				memo.path = path
				memo.r, memo.enc = f.resolve(path, snap)
			}
			r, enc = memo.r, memo.enc
		default:
			if tagR == nil {
				tagR, tagEnc = f.resolveTag(c.Tag, snap)
			}
			r, enc = tagR, tagEnc
		}
		if hasKey || !r.ok {
			if !hasKey {
				st.none++
			}
			if out != nil {
				out = append(out, e[:recAt+recLen]...)
			}
			pos += recAt + recLen
			continue
		}
		if snap.lookupResolved(r) != nil {
			st.full++
		} else {
			st.fileOnly++
			if f.src != nil && len(st.missing) < maxMissingPerChunk && !contains(st.missing, r.key) {
				st.missing = append(st.missing, r.key)
			}
		}
		if out == nil {
			out = make([]byte, 0, len(in)+c.Count*(len(f.keyEnc)+len(enc)+4))
			out = append(out, in[:pos]...)
		}
		out = append(out, e[:recAt]...)
		out = mpack.AppendMapHeader(out, pairs+1)
		out = append(out, rec[mh:recLen]...)
		out = append(out, f.keyEnc...)
		out = append(out, enc...)
		pos += recAt + recLen
	}
	if out == nil {
		return c, st, nil
	}
	return pipeline.Chunk{Tag: c.Tag, Entries: out, Count: c.Count, Source: c.Source}, st, nil
}

// isStr says whether a msgpack value starting with c is a str or bin.
func isStr(c byte) bool {
	return c >= 0xa0 && c <= 0xbf || c == 0xd9 || c == 0xda || c == 0xdb || c == 0xc4 || c == 0xc5 || c == 0xc6
}

func contains(s []string, k string) bool {
	for _, x := range s {
		if x == k {
			return true
		}
	}
	return false
}

// resolved is what a path (or tag) says, and the metadata map of its
// records for one cache generation.
type resolved struct {
	ok   bool
	meta fileMeta
	key  string // meta.key()
	gen  uint64 // the generation enc was made for
	enc  []byte
}

// resolvedCache keeps the resolved paths and tags, shared by every chunk:
// a path is parsed once and its metadata encoded once per cache
// generation.
type resolvedCache struct {
	mu sync.Mutex
	m  map[string]*resolved
}

// maxResolved bounds the resolved cache; it is emptied when full.
const maxResolved = 4096

func (f *Filter) resolve(path []byte, snap *snapshot) (*resolved, []byte) {
	return f.lookupResolved(path, snap, false)
}

func (f *Filter) resolveTag(tag string, snap *snapshot) (*resolved, []byte) {
	return f.lookupResolved([]byte(tag), snap, true)
}

func (f *Filter) lookupResolved(name []byte, snap *snapshot, tag bool) (*resolved, []byte) {
	var gen uint64
	if snap != nil {
		gen = snap.gen
	}
	rc := &f.resolved
	prefix := byte('p')
	if tag {
		prefix = 't'
	}
	var kb [256]byte
	k := append(append(kb[:0], prefix), name...)
	rc.mu.Lock()
	r := rc.m[string(k)]
	rc.mu.Unlock()
	if r != nil && (!r.ok || r.gen == gen) {
		return r, r.enc
	}
	var nr resolved
	if r != nil {
		nr = *r
	} else if tag {
		nr.meta, nr.ok = parseTag(string(name))
	} else {
		nr.meta, nr.ok = parsePath(string(name))
	}
	if nr.ok {
		nr.key = nr.meta.key()
		nr.gen = gen
		nr.enc = encodeMeta(nil, &nr.meta, snap.lookup(&nr.meta), f.host)
	}
	rc.mu.Lock()
	if len(rc.m) >= maxResolved {
		clear(rc.m)
	}
	rc.m[string(k)] = &nr
	rc.mu.Unlock()
	return &nr, nr.enc
}
