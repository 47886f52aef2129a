package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logship/logship/internal/testutil"
)

func TestParseSyncMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SyncMode
		err  bool
	}{
		{"always", SyncAlways, false},
		{"interval", SyncInterval, false},
		{"none", SyncNone, false},
		{"", 0, true},
		{"Always", 0, true},
	} {
		got, err := ParseSyncMode(tc.in)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("ParseSyncMode(%q) = %v, %v", tc.in, got, err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

func TestParseFullPolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FullPolicy
		err  bool
	}{
		{"block", Block, false},
		{"drop_oldest", DropOldest, false},
		{"drop", 0, true},
	} {
		got, err := ParseFullPolicy(tc.in)
		if (err != nil) != tc.err || (err == nil && got != tc.want) {
			t.Errorf("ParseFullPolicy(%q) = %v, %v", tc.in, got, err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for name, opt := range map[string]Option{
		"zero partitions":   WithPartitions(0),
		"tiny segments":     WithSegmentBytes(10),
		"tiny max":          WithMaxBytes(100),
		"zero interval":     WithSyncInterval(0),
		"unknown sync mode": WithSync(SyncMode(9)),
		"unknown policy":    WithWhenFull(FullPolicy(9)),
	} {
		t.Run(name, func(t *testing.T) {
			if b, err := Open(t.TempDir(), opt); err == nil {
				_ = b.Close()
				t.Fatal("Open accepted it")
			}
		})
	}
}

func TestPartitionForIsFNV1a(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(7))
	for _, tag := range []string{"", "a", "app.web", "kube.var.log.containers.x", strings.Repeat("z", 300)} {
		h := fnv.New32a()
		h.Write([]byte(tag))
		if got, want := b.PartitionFor(tag), int(h.Sum32()%7); got != want {
			t.Errorf("PartitionFor(%q) = %d, want %d", tag, got, want)
		}
	}
	if b.Partitions() != 7 {
		t.Errorf("Partitions() = %d", b.Partitions())
	}
}

func TestAppendAndReadBack(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			b := openT(t, dir, WithSync(mode), WithSyncInterval(5*time.Millisecond))
			tags := []string{"app.a", "app.b", "sys.c", "x"}
			want := map[int][]Pos{}
			for i := 0; i < 40; i++ {
				tag := tags[i%len(tags)]
				pos := mustAppend(t, b, tag, payload(tag, i, 100+i), i)
				if pos.Partition != b.PartitionFor(tag) {
					t.Fatalf("record went to partition %d, want %d", pos.Partition, b.PartitionFor(tag))
				}
				if n := len(want[pos.Partition]); pos.Offset != uint64(n) {
					t.Fatalf("offset %d, want %d", pos.Offset, n)
				}
				want[pos.Partition] = append(want[pos.Partition], pos)
			}
			seen := 0
			for p := 0; p < b.Partitions(); p++ {
				c, err := b.Cursor("out", p)
				if err != nil {
					t.Fatal(err)
				}
				recs := readN(t, c, len(want[p]))
				for _, r := range recs {
					parts := strings.SplitN(string(r.Entries), "|", 3)
					var i int
					fmt.Sscan(parts[1], &i)
					if r.Tag != parts[0] || !bytes.Equal(r.Entries, payload(r.Tag, i, 100+i)) || r.Count != i || r.Partition != p {
						t.Fatalf("record %d/%d: bad content (tag %q count %d)", p, r.Offset, r.Tag, r.Count)
					}
					seen++
				}
			}
			if seen != 40 {
				t.Fatalf("read %d records, want 40", seen)
			}
		})
	}
}

func TestAppendAsyncCallsDoneOnce(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			b := openT(t, t.TempDir(), WithSync(mode), WithSyncInterval(5*time.Millisecond), WithPartitions(1))
			const n = 200
			var calls [n]atomic.Int32
			var wg sync.WaitGroup
			wg.Add(n)
			for i := 0; i < n; i++ {
				err := b.AppendAsync(context.Background(), "t", payload("t", i, 50), 1, func(pos Pos, err error) {
					if err != nil {
						t.Errorf("done(%v): %v", pos, err)
					}
					if pos.Offset != uint64(i) {
						t.Errorf("record %d got offset %d", i, pos.Offset)
					}
					calls[i].Add(1)
					wg.Done()
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()
			for i := range calls {
				if c := calls[i].Load(); c != 1 {
					t.Fatalf("done of record %d called %d times", i, c)
				}
			}
		})
	}
}

func TestAppendTooLarge(t *testing.T) {
	b := openT(t, t.TempDir(), WithSegmentBytes(64<<10), WithPartitions(1))
	if _, err := b.Append(context.Background(), "t", make([]byte, 64<<10), 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of a chunk larger than a segment: %v, want ErrTooLarge", err)
	}
	if _, err := b.Append(context.Background(), strings.Repeat("t", 70000), nil, 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append with a huge tag: %v, want ErrTooLarge", err)
	}
	if _, err := b.Append(context.Background(), "t", make([]byte, b.MaxChunkBytes()-1), 1); err != nil {
		t.Fatalf("Append of the largest chunk: %v", err)
	}
}

func TestSegmentsRollAndReopen(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1), WithSegmentBytes(8<<10), WithSync(SyncAlways))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		mustAppend(t, b, "t", payload("t", i, 700), 1)
	}
	if n := len(segFiles(t, dir, 0)); n < 8 {
		t.Fatalf("%d segments, want several", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, WithPartitions(1), WithSegmentBytes(8<<10))
	if got := b.Stats().Partitions[0].NextOffset; got != 100 {
		t.Fatalf("next offset after reopen %d, want 100", got)
	}
	if pos := mustAppend(t, b, "t", payload("t", 100, 700), 1); pos.Offset != 100 {
		t.Fatalf("offset after reopen %d, want 100", pos.Offset)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range readN(t, c, 101) {
		if r.Offset != uint64(i) || !bytes.Equal(r.Entries, payload("t", i, 700)) {
			t.Fatalf("record %d: offset %d, content ok %v", i, r.Offset, bytes.Equal(r.Entries, payload("t", i, 700)))
		}
	}
	// sizes on disk equal the accounted size
	var sum int64
	for _, f := range segFiles(t, dir, 0) {
		sum += fileSize(t, f)
	}
	if st := b.Stats(); st.Bytes != sum || st.Partitions[0].Bytes != sum {
		t.Fatalf("accounted %d / %d bytes, %d on disk", st.Bytes, st.Partitions[0].Bytes, sum)
	}
}

func TestNextBlocksUntilData(t *testing.T) {
	b := openT(t, t.TempDir(), WithPartitions(1), WithSync(SyncNone))
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Record, 1)
	go func() {
		r, err := c.Next(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("Next returned before any append")
	case <-time.After(20 * time.Millisecond):
	}
	mustAppend(t, b, "t", []byte("hello"), 1)
	select {
	case r := <-got:
		if string(r.Entries) != "hello" {
			t.Fatalf("got %q", r.Entries)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not wake up")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next on an empty log: %v", err)
	}
}

func TestCloseWakesReadersAndFailsAppends(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(1), WithMaxBytes(64<<10), WithSegmentBytes(8<<10), WithSync(SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Cursor("out", 0)
	if err != nil {
		t.Fatal(err)
	}
	// fill the buffer
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := b.Append(ctx, "t", make([]byte, 1000), 1)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	appendErr := make(chan error, 1)
	go func() {
		_, err := b.Append(context.Background(), "t", make([]byte, 1000), 1)
		appendErr <- err
	}()
	nextErr := make(chan error, 1)
	c2, err := b.Cursor("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, c2)
	go func() {
		_, err := c2.Next(context.Background())
		nextErr <- err
	}()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if b.Stats().FullWaits < 2 {
			return errors.New("append not waiting yet")
		}
		return nil
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-appendErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Append: %v, want ErrClosed", err)
	}
	if err := <-nextErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Next: %v, want ErrClosed", err)
	}
	if _, err := b.Append(context.Background(), "t", nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := c.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

func TestOpenTwiceIsLocked(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir)
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if _, err := Check(dir, false); !errors.Is(err, ErrLocked) {
		t.Fatalf("Check of an open buffer: %v, want ErrLocked", err)
	}
}

func TestFewerPartitionsKeepsOldOnesReadable(t *testing.T) {
	dir := t.TempDir()
	b, err := Open(dir, WithPartitions(4), WithSync(SyncNone))
	if err != nil {
		t.Fatal(err)
	}
	tag3 := tagFor(3, 4, "old")
	mustAppend(t, b, tag3, []byte("in p3"), 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, dir, WithPartitions(2), WithSync(SyncNone))
	if b.Partitions() != 4 {
		t.Fatalf("Partitions() = %d, want 4 (2 configured + 2 read-only)", b.Partitions())
	}
	for i := 0; i < 50; i++ {
		if pos := mustAppend(t, b, fmt.Sprint("new", i), nil, 0); pos.Partition >= 2 {
			t.Fatalf("append went to read-only partition %d", pos.Partition)
		}
	}
	c, err := b.Cursor("out", 3)
	if err != nil {
		t.Fatal(err)
	}
	if r := readN(t, c, 1)[0]; string(r.Entries) != "in p3" || r.Tag != tag3 {
		t.Fatalf("old record: %q %q", r.Tag, r.Entries)
	}
	st := b.Stats()
	if st.Partitions[3].Writable || !st.Partitions[1].Writable {
		t.Fatalf("writable flags wrong: %+v", st.Partitions)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	b := openT(t, t.TempDir(), WithRegisterer(reg), WithSync(SyncAlways), WithPartitions(2))
	mustAppend(t, b, "t", []byte("x"), 1)
	c, err := b.Cursor("out", b.PartitionFor("t"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"logship_buffer_bytes", "logship_buffer_segments", "logship_buffer_cursor_lag_records",
		"logship_buffer_fsync_duration_seconds", "logship_buffer_dropped_events_total", "logship_buffer_dropped_bytes_total",
		"logship_buffer_corrupted_records_total", "logship_buffer_appended_records_total"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// unregistered: a new broker can register again
	b2 := openT(t, t.TempDir(), WithRegisterer(reg))
	_ = b2
}

func TestMetaNewerVersionRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, metaFile), []byte("logship-buffer 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := Open(dir); err == nil {
		b.Close()
		t.Fatal("Open accepted a newer format")
	}
}
