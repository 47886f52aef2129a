package kafka

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"go.uber.org/zap"

	"github.com/logship/logship/broker"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// The crash test re-executes the test binary as a child that runs a
// buffer, the runner and the kafka output, to a kfake cluster living in
// the parent test process, with a generator input appending numbered
// events and printing every acknowledgement (durable in the buffer), and
// "TXN" after every committed transaction. The parent SIGKILLs it at
// random moments, some right after a transaction committed (before the
// runner's cursor, persisted every 250ms, can have moved), and starts it
// again on the same data dir. At the end the parent drains the buffer
// itself and reads the topic as a read_committed consumer.

const (
	crashChildEnv   = "LOGSHIP_KAFKA_CRASH_DIR"
	crashRoundEnv   = "LOGSHIP_KAFKA_CRASH_ROUND"
	crashBrokersEnv = "LOGSHIP_KAFKA_CRASH_BROKERS"
	crashTopicEnv   = "LOGSHIP_KAFKA_CRASH_TOPIC"
	crashEOEnv      = "LOGSHIP_KAFKA_CRASH_EXACTLY_ONCE"
	crashTags       = 4
	crashParts      = 3
)

func crashBuffer(dir string) (*broker.Broker, error) {
	return broker.Open(filepath.Join(dir, "buffer"), broker.WithPartitions(crashParts),
		broker.WithSegmentBytes(256<<10), broker.WithSync(broker.SyncNone))
}

func crashOutput(dir string, brokers []string, topic string, exactlyOnce bool, metrics *pipeline.ComponentMetrics) (*Output, error) {
	cfg := defaultConfig()
	cfg.Brokers, cfg.Topic, cfg.ExactlyOnce = brokers, topic, exactlyOnce
	cfg.Linger = conftypes.Duration(time.Millisecond)
	cfg.Compression = "none"
	cfg.RetryMin, cfg.RetryMax = conftypes.Duration(20*time.Millisecond), conftypes.Duration(200*time.Millisecond)
	return New(pipeline.Settings{Name: "kafka", Type: "kafka", DataDir: filepath.Join(dir, "data"), Logger: zap.NewNop(), Metrics: metrics}, cfg)
}

func crashComp(name string, kind pipeline.Kind, inst any) pipeline.Component {
	return pipeline.Component{Name: name, Type: "test", Kind: kind, Instance: pipeline.InstanceOf(kind, inst),
		Metrics: pipeline.NopMetrics(kind, name), Matcher: pipeline.MustCompileMatch("**")}
}

// genInput appends chunks of numbered events, "tag/round/seq", and prints
// "ACK tag round first count" once a chunk is durable in the buffer.
type genInput struct {
	round int
	out   func(string)
	stop  chan struct{}
	done  chan struct{}
}

func (g *genInput) Start(_ context.Context, emit pipeline.Emitter) error {
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(g.done)
		rng := rand.New(rand.NewPCG(uint64(g.round), 11))
		seq := make([]int, crashTags)
		for i := 0; ; i++ {
			select {
			case <-g.stop:
				return
			default:
			}
			k := i % crashTags
			tag := fmt.Sprintf("gen.%d", k)
			n := 1 + rng.IntN(20)
			var e []byte
			for j := range n {
				rec := mpack.AppendMapHeader(nil, 1)
				rec = mpack.AppendString(rec, "k")
				rec = mpack.AppendString(rec, fmt.Sprintf("%s/%d/%d", tag, g.round, seq[k]+j))
				e = mpack.AppendEntry(e, mpack.EventTime{Sec: 1_700_000_000}, rec)
			}
			line := fmt.Sprintf("ACK %s %d %d %d\n", tag, g.round, seq[k], n)
			err := emit.Emit(context.Background(), pipeline.Chunk{Tag: tag, Entries: e, Count: n}, func(err error) {
				if err == nil {
					g.out(line)
				}
			})
			if err != nil {
				return
			}
			seq[k] += n
			time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Microsecond)
		}
	}()
	return nil
}

func (g *genInput) Stop(context.Context) error {
	close(g.stop)
	<-g.done
	return nil
}

// crashChild is the child's main; it runs until it is killed.
func crashChild() int {
	dir := os.Getenv(crashChildEnv)
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	buf, err := crashBuffer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open buffer:", err)
		return 2
	}
	var mu sync.Mutex
	out := func(s string) {
		mu.Lock()
		_, _ = os.Stdout.WriteString(s) // unbuffered: one write(2) per line
		mu.Unlock()
	}
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg).Component(pipeline.KindOutput, "kafka", "kafka")
	o, err := crashOutput(dir, strings.Split(os.Getenv(crashBrokersEnv), ","), os.Getenv(crashTopicEnv), os.Getenv(crashEOEnv) == "1", m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "output:", err)
		return 2
	}
	go func() { // report the events skipped as committed already
		last := 0.0
		for range time.Tick(5 * time.Millisecond) {
			var d dto.Metric
			if m.Duplicates.Write(&d) == nil && d.GetCounter().GetValue() != last {
				last = d.GetCounter().GetValue()
				out(fmt.Sprintf("DUP %d\n", int(last)))
			}
		}
	}()
	o.afterCommit = func(int) { out("TXN\n") }
	gen := &genInput{round: round, out: out}
	r := pipeline.NewRunner(buf, zap.NewNop(), []pipeline.Component{crashComp("gen", pipeline.KindInput, gen)}, nil,
		[]pipeline.Component{crashComp("kafka", pipeline.KindOutput, o)})
	if err := r.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 2
	}
	out("READY\n")
	select {} // until killed
}

type crashEvent struct {
	tag        string
	round, seq int
}

type crashAck struct {
	tag                 string
	round, first, count int
}

// crashOut is what one child printed: its acknowledgements, and how many
// events it skipped as committed already by an earlier incarnation.
type crashOut struct {
	acks    []crashAck
	skipped int
}

// TestCrashExactlyOnce: with exactly_once, SIGKILLs of a loaded child at
// random moments (some right after a transaction committed) leave every
// acknowledged event in the topic exactly once for a read_committed
// consumer. The same run without exactly_once shows the duplicates
// at-least-once delivery leaves (logged, not failed).
func TestCrashExactlyOnce(t *testing.T) {
	t.Parallel()
	rounds := 12
	if s := os.Getenv("LOGSHIP_KAFKA_CRASH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	c := cluster(t)
	adm := mustClient(t, c)
	if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), 3, 1, nil, "eo"); err != nil {
		t.Fatal(err)
	}
	if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), 3, 1, nil, "plain"); err != nil {
		t.Fatal(err)
	}
	for _, eo := range []bool{true, false} {
		topic := map[bool]string{true: "eo", false: "plain"}[eo]
		t.Run(topic, func(t *testing.T) {
			t.Parallel()
			dups := crashRun(t, c.ListenAddrs(), topic, eo, rounds)
			if eo && dups > 0 {
				t.Fatalf("%d events read twice with exactly_once", dups)
			}
		})
	}
}

// crashRun runs the rounds and the drain, checks that every acknowledged
// event was read (read_committed), and returns how many were read more
// than once.
func crashRun(t *testing.T, brokers []string, topic string, eo bool, rounds int) int {
	t.Helper()
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	acked := map[crashEvent]bool{}
	afterTxn, skipped := 0, 0
	for round := range rounds {
		onTxn := round%3 == 1
		if onTxn && eo {
			afterTxn++
		}
		got := runCrashChild(t, dir, brokers, topic, eo, round, onTxn, rng)
		skipped += got.skipped
		for _, a := range got.acks {
			for j := range a.count {
				acked[crashEvent{a.tag, a.round, a.first + j}] = true
			}
		}
	}

	// Drain what the buffer holds, without kills.
	buf, err := crashBuffer(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	o, err := crashOutput(dir, brokers, topic, eo, pipeline.NewMetrics(reg).Component(pipeline.KindOutput, "kafka", "kafka"))
	if err != nil {
		t.Fatal(err)
	}
	r := pipeline.NewRunner(buf, zap.NewNop(), nil, nil, []pipeline.Component{crashComp("kafka", pipeline.KindOutput, o)})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 20*time.Second, func() error {
		for _, cs := range buf.Stats().Cursors {
			if cs.Name == "kafka" && cs.Lag != 0 {
				return fmt.Errorf("partition %d: lag %d", cs.Partition, cs.Lag)
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if len(acked) < 1000 {
		t.Fatalf("only %d events acknowledged in %d rounds: the test did not load the output", len(acked), rounds)
	}

	recs := consumeCommitted(t, brokers, topic, len(acked), 20*time.Second)
	seen := map[crashEvent]int{}
	for _, rec := range recs {
		var v struct{ K string }
		if err := json.Unmarshal(rec.Value, &v); err != nil {
			t.Fatalf("message %q: %v", rec.Value, err)
		}
		var ev crashEvent
		parts := strings.Split(v.K, "/")
		if len(parts) != 3 {
			t.Fatalf("message %q is not the generator's", rec.Value)
		}
		ev.tag = parts[0]
		ev.round, _ = strconv.Atoi(parts[1])
		ev.seq, _ = strconv.Atoi(parts[2])
		seen[ev]++
	}
	missing, dups, twice := 0, 0, crashEvent{}
	for ev := range acked {
		if seen[ev] == 0 {
			missing++
		}
	}
	for ev, n := range seen {
		if n > 1 {
			dups += n - 1
			twice = ev
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged events missing from topic %s", missing, len(acked), topic)
	}
	var d dto.Metric
	_ = o.set.Metrics.Duplicates.Write(&d)
	skipped += int(d.GetCounter().GetValue())
	t.Logf("exactly_once %v: %d rounds (%d killed right after a transaction committed), %d acknowledged events, %d read (read_committed), %d read more than once (e.g. %+v); %d events skipped after restarts as committed already",
		eo, rounds, afterTxn, len(acked), len(recs), dups, twice, skipped)
	return dups
}

// runCrashChild runs one child and SIGKILLs it at a random moment after
// it is ready; with onTxn, right after the first transaction it commits
// past that moment (for an output without exactly_once, at that moment).
// It returns the acknowledgements the child printed.
func runCrashChild(t *testing.T, dir string, brokers []string, topic string, eo bool, round int, onTxn bool, rng *rand.Rand) crashOut {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	eoVal := "0"
	if eo {
		eoVal = "1"
	}
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round),
		crashBrokersEnv+"="+strings.Join(brokers, ","), crashTopicEnv+"="+topic, crashEOEnv+"="+eoVal)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var killed atomic.Bool
	kill := func() {
		if killed.CompareAndSwap(false, true) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	t.Cleanup(kill)
	var armed atomic.Bool // kill at the next TXN line
	firedAtTxn := make(chan struct{})
	ready := make(chan struct{})
	acks := make(chan crashOut, 1)
	go func() {
		var got crashOut
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch line {
			case "READY":
				close(ready)
			case "TXN":
				if armed.CompareAndSwap(true, false) {
					kill()
					close(firedAtTxn)
				}
			default:
				var a crashAck
				if n, _ := fmt.Sscanf(line, "ACK %s %d %d %d", &a.tag, &a.round, &a.first, &a.count); n == 4 {
					got.acks = append(got.acks, a)
				}
				_, _ = fmt.Sscanf(line, "DUP %d", &got.skipped)
			}
		}
		acks <- got
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		kill()
		<-acks
		_ = cmd.Wait()
		t.Fatalf("round %d: child not ready: %s", round, stderr.String())
	}
	time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
	if onTxn && eo {
		armed.Store(true)
		select {
		case <-firedAtTxn:
		case <-time.After(5 * time.Second):
		}
	}
	kill()
	got := <-acks
	_ = cmd.Wait()
	if s := stderr.String(); s != "" {
		t.Logf("round %d: child stderr: %s", round, s)
	}
	return got
}
