package broker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child that appends and
// prints every acknowledgement; the parent SIGKILLs it at a random moment,
// reopens the buffer and checks that every acknowledged record is there,
// intact and in order.

const (
	crashChildEnv = "LOGSHIP_BROKER_CRASH_DIR"
	crashRoundEnv = "LOGSHIP_BROKER_CRASH_ROUND"
	crashModeEnv  = "LOGSHIP_BROKER_CRASH_MODE"
	crashTags     = 6
	crashParts    = 3
)

func crashOpts(mode SyncMode) []Option {
	return []Option{WithPartitions(crashParts), WithSegmentBytes(64 << 10), WithSync(mode),
		WithSyncInterval(5 * time.Millisecond), withFlushEvery(20 * time.Millisecond)}
}

func crashPayload(tag string, round, seq, size int) []byte {
	return payload(fmt.Sprintf("%s|%d|%d|%d", tag, round, seq, size), seq, size)
}

// crashChild is the child's main: it never returns normally before it is
// killed, unless it runs out of work.
func crashChild() int {
	dir := os.Getenv(crashChildEnv)
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	modeName, async := os.Getenv(crashModeEnv), false
	if m, ok := strings.CutSuffix(modeName, "-async"); ok {
		modeName, async = m, true
	}
	mode, err := ParseSyncMode(modeName)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b, err := Open(dir, crashOpts(mode)...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	var outMu sync.Mutex
	out := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format, args...) // unbuffered: one write(2) per line
		outMu.Unlock()
	}
	// a reader that commits what it reads (every other round), so that
	// retention deletes segments while the child is killed at random
	if round%2 == 0 {
		for p := 0; p < crashParts; p++ {
			c, err := b.Cursor("crash-reader", p)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			go func() {
				for {
					r, err := c.Next(context.Background())
					if err != nil {
						return
					}
					_ = c.Commit(r.Offset)
				}
			}()
		}
	}
	out("READY\n")
	var wg sync.WaitGroup
	for k := 0; k < crashTags; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tag := fmt.Sprintf("crash.%d", k)
			rng := rand.New(rand.NewPCG(uint64(round), uint64(k)))
			for seq := 0; seq < 20000; seq++ {
				size := 100 + rng.IntN(3000)
				data := crashPayload(tag, round, seq, size)
				if async {
					err := b.AppendAsync(context.Background(), tag, data, seq, func(pos Pos, err error) {
						if err == nil {
							out("ACK %s %d %d %d %d\n", tag, round, seq, pos.Partition, pos.Offset)
						}
					})
					if err != nil {
						return
					}
					continue
				}
				pos, err := b.Append(context.Background(), tag, data, seq)
				if err != nil {
					return
				}
				out("ACK %s %d %d %d %d\n", tag, round, seq, pos.Partition, pos.Offset)
			}
		}()
	}
	wg.Wait()
	_ = b.Close()
	return 0
}

type crashAck struct {
	tag        string
	round, seq int
	pos        Pos
}

func TestCrashConsistency(t *testing.T) {
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	if s := os.Getenv("LOGSHIP_BROKER_CRASH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	modes := []string{"always", "interval", "none", "interval-async", "always-async"}
	dir := t.TempDir()
	var acks []crashAck
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := 0; round < rounds; round++ {
		mode := modes[round%len(modes)]
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round), crashModeEnv+"="+mode)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		lines := make(chan []crashAck, 1)
		go func() {
			var got []crashAck
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				if line == "READY" {
					close(ready)
					continue
				}
				var a crashAck
				if n, _ := fmt.Sscanf(line, "ACK %s %d %d %d %d", &a.tag, &a.round, &a.seq, &a.pos.Partition, &a.pos.Offset); n == 5 {
					got = append(got, a)
				}
			}
			lines <- got
		}()
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("round %d: child not ready: %s", round, stderr.String())
		}
		time.Sleep(time.Duration(5+rng.IntN(150)) * time.Millisecond) // the random moment of the crash
		_ = cmd.Process.Signal(syscall.SIGKILL)
		got := <-lines
		_ = cmd.Wait()
		if len(got) == 0 && !strings.Contains(stderr.String(), "") {
			t.Logf("round %d: no acks", round)
		}
		acks = append(acks, got...)
		verifyCrash(t, dir, round, mode, acks)
	}
	t.Logf("%d rounds, %d acknowledged records verified", rounds, len(acks))
}

func verifyCrash(t *testing.T, dir string, round int, mode string, acks []crashAck) {
	t.Helper()
	b, err := Open(dir, crashOpts(SyncNone)...)
	if err != nil {
		t.Fatalf("round %d (%s): reopen: %v", round, mode, err)
	}
	defer b.Close()
	if n := b.Stats().CorruptRecords; n != 0 {
		t.Fatalf("round %d (%s): %d corrupt records after a process kill", round, mode, n)
	}
	type key struct {
		tag        string
		round, seq int
	}
	found := map[key]Pos{}
	last := map[string][2]int{}
	first := make([]uint64, crashParts)
	name := fmt.Sprintf("verify-%d", round)
	for p := 0; p < crashParts; p++ {
		c, err := b.Cursor(name, p)
		if err != nil {
			t.Fatal(err)
		}
		first[p] = c.Committed()
		for _, r := range drain(t, c) {
			parts := strings.SplitN(string(r.Entries), "|", 5)
			if len(parts) < 5 {
				t.Fatalf("round %d: record %d/%d: bad payload", round, p, r.Offset)
			}
			rd, _ := strconv.Atoi(parts[1])
			seq, _ := strconv.Atoi(parts[2])
			size, _ := strconv.Atoi(parts[3])
			if parts[0] != r.Tag || !bytes.Equal(r.Entries, crashPayload(r.Tag, rd, seq, size)) || r.Count != seq {
				t.Fatalf("round %d: record %d/%d of %s is not intact", round, p, r.Offset, r.Tag)
			}
			if l, ok := last[r.Tag]; ok && (rd < l[0] || rd == l[0] && seq <= l[1]) {
				t.Fatalf("round %d: %s out of order: %d/%d after %d/%d", round, r.Tag, rd, seq, l[0], l[1])
			}
			last[r.Tag] = [2]int{rd, seq}
			found[key{r.Tag, rd, seq}] = Pos{p, r.Offset}
		}
		_ = c.Close()
	}
	if err := b.RemoveCursor(name); err != nil {
		t.Fatal(err)
	}
	committed := make([]uint64, crashParts)
	for _, cs := range b.Stats().Cursors {
		if cs.Name == "crash-reader" {
			committed[cs.Partition] = cs.Committed
			if cs.Committed > b.Stats().Partitions[cs.Partition].NextOffset {
				t.Fatalf("round %d: cursor past the end", round)
			}
		}
	}
	for _, a := range acks {
		pos, ok := found[key{a.tag, a.round, a.seq}]
		if ok {
			if pos != a.pos {
				t.Fatalf("round %d: acked %s %d/%d at %v, found at %v", round, a.tag, a.round, a.seq, a.pos, pos)
			}
			continue
		}
		// only allowed if consumed by the committing reader and deleted
		p := a.pos.Partition
		if !(a.pos.Offset < first[p] && a.pos.Offset < committed[p]) {
			t.Fatalf("round %d (%s): acknowledged record %s round %d seq %d at %v is lost (first retained %d, committed %d)",
				round, mode, a.tag, a.round, a.seq, a.pos, first[p], committed[p])
		}
	}
}
