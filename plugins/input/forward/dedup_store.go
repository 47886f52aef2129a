package forward

import "math"

// idStore holds the committed chunk ids densely: a FIFO ring of (hash,
// commit time) in fixed blocks, oldest first, and an index over it, an
// open-addressing table of ring positions split in shards. A remembered id
// costs 20 bytes in the ring (16 of hash, 4 of time) and 4 bytes per index
// slot, the index being kept between 1/8 and 1/2 full: about 28 bytes per
// id for a full default window (10^6 ids: 2^21 index slots), at most 32
// for 2^k/2 ids, the most the index holds before it doubles.
// (TestDedupBytesPerID.)
//
// Memory follows what is remembered: the ring takes a block when its last
// one is full and gives a block back once its head passed it; a shard
// doubles past 1/2 full and halves below 1/8 (amortised: a shard holds at
// most a few tens of thousands of ids, so no operation rehashes much).
//
// Positions: the ring's ids are numbered in commit order (seq); the live
// ones are [first, next). The index stores a seq as seq mod (2^32-1), plus
// 1 (0 marks an empty slot); since fewer than 2^32-1 ids are live, the seq
// is recovered from first. Times are milliseconds since epoch, a field
// moved forward (rebase) in the rare case that an offset would not fit in
// 32 bits (49.7 days); a new id's time is never moved back.
type idStore struct {
	first, next uint64
	blocks      []*idBlock // blocks[0] holds first (when not empty)
	spare       *idBlock   // the last block given back, reused first
	epoch       int64      // unix milliseconds of time offset 0
	shards      []idShard
	shift       uint // a hash's top bits pick its shard: h[0] >> shift
}

const (
	blockBits = 10
	blockIDs  = 1 << blockBits // ids per ring block: 20KiB
	seqMod    = math.MaxUint32 // positions are stored modulo this, plus 1
	// shardMin is the fewest slots of an index shard.
	shardMin = 8
)

type idBlock struct {
	h [blockIDs]idHash
	t [blockIDs]uint32 // commit time, milliseconds after the store's epoch
}

type idShard struct {
	slots []uint32 // ring positions + 1; 0: empty
	n     int
}

// newIDStore returns a store for up to window ids: its index has about one
// shard per 8192 ids of window (at least 64), so that a shard's rehash
// stays small.
func newIDStore(window int) *idStore {
	sb := uint(6)
	for sb < 16 && window>>sb > 8192 {
		sb++
	}
	s := &idStore{shards: make([]idShard, 1<<sb), shift: 64 - sb}
	for i := range s.shards {
		s.shards[i].slots = make([]uint32, shardMin)
	}
	return s
}

func (s *idStore) len() int { return int(s.next - s.first) }

// slot returns the block and index of position seq (first <= seq < next).
func (s *idStore) slot(seq uint64) (*idBlock, int) {
	off := seq - s.first&^(blockIDs-1)
	return s.blocks[off>>blockBits], int(off & (blockIDs - 1))
}

// hashAt returns the hash at position seq.
func (s *idStore) hashAt(seq uint64) idHash {
	b, i := s.slot(seq)
	return b.h[i]
}

// timeAt returns the commit time of position seq, in unix milliseconds.
func (s *idStore) timeAt(seq uint64) int64 {
	b, i := s.slot(seq)
	return s.epoch + int64(b.t[i])
}

// oldest returns the hash and the commit time (unix milliseconds) of the
// oldest id; the store must not be empty.
func (s *idStore) oldest() (idHash, int64) {
	b, i := s.slot(s.first)
	return b.h[i], s.epoch + int64(b.t[i])
}

func encodePos(seq uint64) uint32 { return uint32(seq%seqMod) + 1 }

// decodePos returns the position stored as v.
func (s *idStore) decodePos(v uint32) uint64 {
	return s.first + (uint64(v-1)+seqMod-s.first%seqMod)%seqMod
}

func (s *idStore) shard(h idHash) *idShard { return &s.shards[h[0]>>s.shift] }

// contains reports whether h is in the store.
func (s *idStore) contains(h idHash) bool {
	sh := s.shard(h)
	mask := uint64(len(sh.slots) - 1)
	for i := h[0] & mask; ; i = (i + 1) & mask {
		v := sh.slots[i]
		if v == 0 {
			return false
		}
		if s.hashAt(s.decodePos(v)) == h {
			return true
		}
	}
}

// push appends h, committed at ms (unix milliseconds); h must not be in
// the store.
func (s *idStore) push(h idHash, ms int64) {
	if s.first == s.next {
		s.epoch = ms // nothing refers to the old epoch
	}
	off := ms - s.epoch
	if off > math.MaxUint32 {
		s.rebase(ms)
		off = ms - s.epoch
	}
	off = max(off, 0) // a clock set back: as old as epoch
	seq := s.next
	if seq == s.first&^(blockIDs-1)+uint64(len(s.blocks))<<blockBits {
		b := s.spare
		if b == nil {
			b = new(idBlock)
		}
		s.spare = nil
		s.blocks = append(s.blocks, b)
	}
	b, i := s.slot(seq)
	b.h[i], b.t[i] = h, uint32(off)
	s.next++
	s.insert(s.shard(h), h, seq)
}

// rebase moves epoch forward for an id committed at ms whose offset is
// past 32 bits: to the oldest id's time (every id is 49.7 days younger
// than epoch; ids live at most dedup_retention, 24h, so the offsets fit
// again), or further, to ms less 2^32-1 milliseconds, when even the oldest
// id is that much older than ms (the wall clock jumped forward and dedup
// did not forget the expired ids first): the ids older than the new epoch
// count as committed at it, remembered longer, and ms keeps its time.
func (s *idStore) rebase(ms int64) {
	_, t0 := s.oldest()
	to := max(t0, ms-math.MaxUint32)
	d := to - s.epoch
	for seq := s.first; seq < s.next; seq++ {
		b, i := s.slot(seq)
		b.t[i] -= uint32(min(int64(b.t[i]), d))
	}
	s.epoch = to
}

func (s *idStore) insert(sh *idShard, h idHash, seq uint64) {
	if 2*(sh.n+1) > len(sh.slots) {
		s.resize(sh, 2*len(sh.slots))
	}
	mask := uint64(len(sh.slots) - 1)
	i := h[0] & mask
	for sh.slots[i] != 0 {
		i = (i + 1) & mask
	}
	sh.slots[i] = encodePos(seq)
	sh.n++
}

// resize rehashes a shard into n slots.
func (s *idStore) resize(sh *idShard, n int) {
	old := sh.slots
	sh.slots = make([]uint32, n)
	mask := uint64(n - 1)
	for _, v := range old {
		if v == 0 {
			continue
		}
		i := s.hashAt(s.decodePos(v))[0] & mask
		for sh.slots[i] != 0 {
			i = (i + 1) & mask
		}
		sh.slots[i] = v
	}
}

// pop forgets the oldest id; the store must not be empty.
func (s *idStore) pop() {
	h, _ := s.oldest()
	sh := s.shard(h)
	mask := uint64(len(sh.slots) - 1)
	want := encodePos(s.first)
	i := h[0] & mask
	for sh.slots[i] != want {
		i = (i + 1) & mask
	}
	// Backward-shift deletion (no tombstones): move up every later entry
	// of the cluster whose home is not in (i, j].
	for j := (i + 1) & mask; sh.slots[j] != 0; j = (j + 1) & mask {
		home := s.hashAt(s.decodePos(sh.slots[j]))[0] & mask
		if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
			continue
		}
		sh.slots[i] = sh.slots[j]
		i = j
	}
	sh.slots[i] = 0
	sh.n--
	s.first++
	if s.first&(blockIDs-1) == 0 { // blocks[0] is passed: give it back
		s.spare = s.blocks[0]
		s.blocks[0] = nil
		s.blocks = s.blocks[1:]
	}
	if 8*sh.n < len(sh.slots) && len(sh.slots) > shardMin {
		s.resize(sh, len(sh.slots)/2)
	}
}

// bytes returns the memory the store holds (ring blocks, spare, index).
func (s *idStore) bytes() int {
	n := (len(s.blocks) + btoi(s.spare != nil)) * (blockIDs * 20)
	n += cap(s.blocks) * 8
	for i := range s.shards {
		n += 4*len(s.shards[i].slots) + 32
	}
	return n
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
