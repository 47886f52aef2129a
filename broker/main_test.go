package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

// openT opens a broker that is closed when the test ends.
func openT(t testing.TB, dir string, opts ...Option) *Broker {
	t.Helper()
	b, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// payload returns deterministic entries for (tag, i) of about n bytes.
func payload(tag string, i, n int) []byte {
	head := fmt.Sprintf("%s|%d|", tag, i)
	b := make([]byte, max(n, len(head)))
	copy(b, head)
	x := uint32(i*2654435761) ^ uint32(len(tag))
	for j := len(head); j < len(b); j++ {
		x = x*1664525 + 1013904223
		b[j] = byte(x >> 24)
	}
	return b
}

func mustAppend(t testing.TB, b *Broker, tag string, entries []byte, count int) Pos {
	t.Helper()
	pos, err := b.Append(context.Background(), tag, entries, count)
	if err != nil {
		t.Fatalf("Append(%q): %v", tag, err)
	}
	return pos
}

// readN reads n records from c, failing after a timeout.
func readN(t testing.TB, c *Cursor, n int) []Record {
	t.Helper()
	out := make([]Record, 0, n)
	for len(out) < n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Next after %d of %d records: %v", len(out), n, err)
		}
		out = append(out, r)
	}
	return out
}

// readAll reads every record currently in c's partition after its
// position.
func readAll(t testing.TB, c *Cursor) []Record {
	t.Helper()
	var out []Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		r, err := c.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, r)
	}
}

// segFiles lists the segment files of a partition.
func segFiles(t testing.TB, dir string, p int) []string { return partFiles(t, dir, p, segSuffix) }

// spareFiles lists partition p's spare segment files (WithSegmentReuse).
func spareFiles(t testing.TB, dir string, p int) []string { return partFiles(t, dir, p, spareSuffix) }

func partFiles(t testing.TB, dir string, p int, suffix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, partDirName(p), "*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// tagFor returns a tag that goes to partition p of n.
func tagFor(p, n int, prefix string) string {
	for i := 0; ; i++ {
		tag := fmt.Sprintf("%s.%d", prefix, i)
		if partitionFor(tag, n) == p {
			return tag
		}
	}
}

// drain reads every record from c's position to the current end of its
// partition, without waiting at the end.
func drain(t testing.TB, c *Cursor) []Record {
	t.Helper()
	end := c.p.b.Stats().Partitions[c.p.id].NextOffset
	var out []Record
	for {
		c.mu.Lock()
		at := c.readOff
		c.mu.Unlock()
		if at >= end {
			return out
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := c.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Next at %d of %d: %v", at, end, err)
		}
		out = append(out, r)
	}
}
