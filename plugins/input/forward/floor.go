package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/logship/logship/internal/atomicfile"
	"github.com/logship/logship/pipeline"
)

// The chunk-id journal is written after the buffer made a chunk durable,
// so a process kill between the two would forget an id whose chunk is
// stored: its resend would be stored twice. To close that gap every chunk
// is stored with its id (pipeline.Chunk.Source), and the journal keeps a
// buffer floor beside it (chunk-ids.floor, replaced every floorEvery):
// every stored chunk whose id the journal lacks is at or after the floor
// (markFloor). At start the ids of the records after the floor are read
// back from the buffer (pipeline.Positions) and journaled: the window is
// exactly what was stored.

// floorEvery is how often the floor moves (when it changed): it bounds
// what a restart reads back from the buffer.
const floorEvery = 200 * time.Millisecond

const floorMagic = "logship-chunk-ids-floor 1"

func (d *dedup) floorPath() string { return d.path + ".floor" }

// readFloor returns the floor saved beside the journal; nil (read every
// record) when there is none or it cannot be read.
func (d *dedup) readFloor() ([]uint64, error) {
	b, err := os.ReadFile(d.floorPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != floorMagic {
		return nil, fmt.Errorf("%s: not a floor file", d.floorPath())
	}
	var f []uint64
	for _, s := range strings.Fields(lines[1]) {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.floorPath(), err)
		}
		f = append(f, n)
	}
	return f, nil
}

func (d *dedup) writeFloor(f []uint64) error {
	var sb strings.Builder
	sb.WriteString(floorMagic + "\n")
	for i, n := range f {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strconv.FormatUint(n, 10))
	}
	sb.WriteByte('\n')
	return atomicfile.Write(d.floorPath(), []byte(sb.String()), 0o644)
}

// recoverFrom reads back the ids of the chunks stored after the saved
// floor and journals those the journal lacks; it returns how many.
func (d *dedup) recoverFrom(ctx context.Context, pos pipeline.Positions) (int, error) {
	floor, ferr := d.readFloor()
	var ids [][]byte
	err := pos.Sources(ctx, floor, func(_ int, _ uint64, src []byte) error {
		ids = append(ids, slices.Clone(src))
		return nil
	})
	if err != nil {
		return 0, err
	}
	return d.recover(ids), ferr
}

// keepFloor moves the saved floor every floorEvery until close, and a last
// time then.
func (d *dedup) keepFloor(pos pipeline.Positions) {
	d.floorStop = make(chan struct{})
	d.floorDone = make(chan struct{})
	go func() {
		defer close(d.floorDone)
		var last []uint64
		save := func() {
			f := d.markFloor(pos.Floor)
			if slices.Equal(f, last) {
				return
			}
			if err := d.writeFloor(f); err != nil {
				d.onErr(fmt.Errorf("dedup floor: %w", err))
				return
			}
			last = f
		}
		t := time.NewTicker(floorEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				save()
			case <-d.floorStop:
				save()
				return
			}
		}
	}()
}
