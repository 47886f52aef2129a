package kafka

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/logship/logship/internal/atomicfile"
)

// Exactly once into the buffer. When the emitter keeps source positions
// (pipeline.Positions, as the pipeline's does), every chunk stores with
// its events the partition's range it covers: (topic, partition, prev,
// end), where prev is the end of the chunk emitted before it for that
// partition in the same session (or where the session started reading)
// and end the offset after its last message. After a kill, the ranges
// stored after the buffer floor saved with the last successful commit are
// read back at Start; when a partition is assigned, its position is the
// committed offset moved over every stored range that continues it (prev
// at or before the position). A range whose predecessor never became
// durable (a chunk the buffer refused, being retried at the kill) does not
// continue the chain, so nothing it skipped over is lost. The offsets the
// group committed remain the floor: positions only move a partition
// forward, never back.
//
// Positions are this process's: another member that takes a partition
// over starts from the committed offset and may read again what this one
// stored after its last commit (bounded by commit_interval).

// sourceVersion is the first byte of an encoded source; another version is
// ignored.
const sourceVersion = 1

// span is the stored range of one chunk.
type span struct {
	prev, end int64
	epoch     int32 // the leader epoch of the chunk's last message
}

func appendSource(b []byte, topic string, part int32, s span) []byte {
	b = append(b, sourceVersion)
	b = binary.AppendUvarint(b, uint64(len(topic)))
	b = append(b, topic...)
	b = binary.AppendUvarint(b, uint64(part))
	b = binary.AppendUvarint(b, uint64(s.prev))
	b = binary.AppendUvarint(b, uint64(s.end))
	return binary.AppendVarint(b, int64(s.epoch))
}

var errSource = errors.New("kafka input: malformed source position")

func parseSource(b []byte) (tp, span, error) {
	if len(b) == 0 || b[0] != sourceVersion {
		return tp{}, span{}, errSource
	}
	b = b[1:]
	var vals [4]uint64
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return tp{}, span{}, errSource
	}
	topic := string(b[k : k+int(n)])
	b = b[k+int(n):]
	for i := range 3 {
		if vals[i], k = binary.Uvarint(b); k <= 0 {
			return tp{}, span{}, errSource
		}
		b = b[k:]
	}
	e, k := binary.Varint(b)
	if k <= 0 || k != len(b) || vals[0] > 1<<31-1 || vals[1] > 1<<62 || vals[2] > 1<<62 || vals[1] > vals[2] {
		return tp{}, span{}, errSource
	}
	return tp{topic, int32(vals[0])}, span{prev: int64(vals[1]), end: int64(vals[2]), epoch: int32(e)}, nil
}

// floorFile holds the buffer floor taken before the last successful
// commit.
type floorFile struct {
	Floor []uint64 `json:"buffer_floor"`
}

func (in *Input) floorPath() string {
	if in.set.DataDir == "" {
		return ""
	}
	return filepath.Join(in.set.DataDir, "input", in.set.Name, "positions.json")
}

func (in *Input) loadFloor() []uint64 {
	p := in.floorPath()
	if p == "" {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			in.log.Warn("kafka input: buffer floor unreadable; positions are searched in the whole buffer", zap.Error(err))
		}
		return nil
	}
	var f floorFile
	if err := json.Unmarshal(b, &f); err != nil {
		in.log.Warn("kafka input: buffer floor unreadable; positions are searched in the whole buffer", zap.String("path", p), zap.Error(err))
		return nil
	}
	return f.Floor
}

func (in *Input) saveFloor(floor []uint64) {
	p := in.floorPath()
	if p == "" {
		return
	}
	b, _ := json.Marshal(floorFile{Floor: floor})
	err := os.MkdirAll(filepath.Dir(p), 0o755)
	if err == nil {
		err = atomicfile.Write(p, b, 0o644)
	}
	if err != nil {
		in.rl.Warn("floor", "kafka input: saving the buffer floor failed; the next start searches further back", zap.Error(err))
		return
	}
	in.savedFloor = floor
}

// recoverPositions reads back the ranges stored after the saved floor.
func (in *Input) recoverPositions(ctx context.Context) {
	start := time.Now()
	spans := map[tp][]span{}
	n, bad := 0, 0
	err := in.pos.Sources(ctx, in.loadFloor(), func(_ int, _ uint64, src []byte) error {
		k, s, err := parseSource(src)
		if err != nil {
			bad++
			return nil
		}
		spans[k] = append(spans[k], s)
		n++
		return nil
	})
	if err != nil {
		in.log.Warn("kafka input: reading positions back from the buffer failed; partitions start at their committed offsets", zap.Error(err))
		return
	}
	for k, ss := range spans {
		slices.SortFunc(ss, func(a, b span) int {
			if a.prev != b.prev {
				return cmpInt(a.prev, b.prev)
			}
			return cmpInt(b.end, a.end)
		})
		spans[k] = ss
	}
	in.mu.Lock()
	in.recovered = spans
	in.mu.Unlock()
	if n > 0 || bad > 0 {
		in.log.Info("kafka input: positions read back from the buffer", zap.Int("chunks", n), zap.Int("partitions", len(spans)), zap.Int("malformed", bad), zap.Duration("took", time.Since(start)))
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// chain moves pos over the spans that continue it.
func chain(pos kgo.EpochOffset, ss []span) kgo.EpochOffset {
	for _, s := range ss {
		if s.prev <= pos.Offset && s.end > pos.Offset {
			pos = kgo.EpochOffset{Epoch: s.epoch, Offset: s.end}
		}
	}
	return pos
}

// adjust is the client's AdjustFetchOffsetsFn: a newly assigned partition
// starts at its committed offset moved over the positions stored with
// the data, and its sources chain from there. A partition without a
// committed offset read from the earliest offset anchors the chain at its
// log start offset: the first chunk read from there stored that offset,
// or one before it, as its prev.
func (in *Input) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	if in.pos == nil {
		in.setLastEnd(offsets, nil)
		return offsets, nil
	}
	// Partitions to anchor at their log start.
	var unanchored []string
	in.mu.Lock()
	for topic, parts := range offsets {
		for p, o := range parts {
			if o.EpochOffset().Offset < 0 && in.cfg.StartOffset == "earliest" && len(in.recovered[tp{topic, p}]) > 0 && !slices.Contains(unanchored, topic) {
				unanchored = append(unanchored, topic)
			}
		}
	}
	in.mu.Unlock()
	var starts kadm.ListedOffsets
	if len(unanchored) > 0 {
		lctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout.D())
		var err error
		if starts, err = kadm.NewClient(in.client()).ListStartOffsets(lctx, unanchored...); err != nil {
			in.log.Warn("kafka input: start offsets unknown; partitions without a committed offset start at the earliest", zap.Error(err))
			starts = nil
		}
		cancel()
	}

	moved := map[tp]kgo.EpochOffset{}
	from := map[tp]int64{}
	in.mu.Lock()
	for topic, parts := range offsets {
		for p, o := range parts {
			k := tp{topic, p}
			eo := o.EpochOffset()
			if eo.Offset < 0 {
				s, ok := starts.Lookup(topic, p)
				if !ok || s.Err != nil || s.Offset < 0 {
					continue // read from the reset offset
				}
				eo = kgo.EpochOffset{Epoch: -1, Offset: s.Offset}
			}
			pos := chain(eo, in.recovered[k])
			if d := in.durable[k]; d.Offset > pos.Offset {
				pos = d
			}
			if pos.Offset > eo.Offset {
				moved[k] = pos
				from[k] = eo.Offset
			}
		}
	}
	in.mu.Unlock()
	if len(moved) > 0 {
		in.move(ctx, offsets, moved, from)
	}
	in.setLastEnd(offsets, moved)
	return offsets, nil
}

// move sets offsets to the positions in moved, but for a position past
// the end of its partition: that one is not this topic's (it was deleted
// and made again), and the partition keeps its committed offset.
func (in *Input) move(ctx context.Context, offsets map[string]map[int32]kgo.Offset, moved map[tp]kgo.EpochOffset, from map[tp]int64) {
	var topics []string
	for k := range moved {
		if !slices.Contains(topics, k.topic) {
			topics = append(topics, k.topic)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout.D())
	ends, err := kadm.NewClient(in.client()).ListEndOffsets(lctx, topics...)
	cancel()
	if err != nil {
		in.log.Warn("kafka input: end offsets unknown; partitions start at their committed offsets", zap.Error(err))
		clear(moved)
		return
	}
	skipped := int64(0)
	for k, pos := range moved {
		end, ok := ends.Lookup(k.topic, k.part)
		if !ok || end.Err != nil || pos.Offset > end.Offset {
			in.rl.Warn("stale_position", "kafka input: a stored position is past the partition's end; starting at the committed offset", zap.String("topic", k.topic), zap.Int32("partition", k.part))
			delete(moved, k)
			continue
		}
		offsets[k.topic][k.part] = kgo.NewOffset().At(pos.Offset).WithEpoch(pos.Epoch)
		skipped += pos.Offset - from[k]
	}
	if skipped > 0 {
		in.m.skipped.Add(float64(skipped))
		in.log.Info("kafka input: partitions resume past their committed offsets, at positions stored with the data", zap.Int64("messages_not_read_again", skipped))
	}
}

// setLastEnd records where each assigned partition starts reading, the
// prev of its first chunk's source: the position it was moved to, or its
// committed offset (unknown, -1, for a reset offset).
func (in *Input) setLastEnd(offsets map[string]map[int32]kgo.Offset, moved map[tp]kgo.EpochOffset) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for topic, parts := range offsets {
		for p, o := range parts {
			st := in.parts[tp{topic, p}]
			if st == nil {
				continue
			}
			if m, ok := moved[tp{topic, p}]; ok {
				st.lastEnd = m.Offset
			} else if eo := o.EpochOffset(); eo.Offset >= 0 {
				st.lastEnd = eo.Offset
			}
		}
	}
}

// commitLoop commits the durable offsets every commit_interval and, when
// the emitter keeps positions, saves the buffer floor taken before each
// successful commit.
func (in *Input) commitLoop() {
	defer in.wg.Done()
	t := time.NewTicker(in.cfg.CommitInterval.D())
	defer t.Stop()
	for {
		select {
		case <-in.ctx.Done():
			return
		case <-t.C:
		}
		_ = in.commitAndSave(in.ctx) // counted and logged; the next tick retries
	}
}

// commitAndSave commits what is durable and saves the floor taken before.
func (in *Input) commitAndSave(ctx context.Context) error {
	if in.skipCommit.Load() {
		return nil
	}
	var floor []uint64
	if in.pos != nil {
		floor = in.pos.Floor()
	}
	in.markDurable(nil)
	if err := in.client().CommitMarkedOffsets(ctx); err != nil {
		if !errors.Is(err, context.Canceled) {
			in.m.commitErr.Inc()
			in.rl.Warn("commit", "kafka input: offset commit failed; retried with the next one", zap.Error(err))
		}
		return fmt.Errorf("commit: %w", err)
	}
	if floor != nil && !slices.Equal(floor, in.savedFloor) {
		in.saveFloor(floor)
	}
	return nil
}
