package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/internal/testutil"
)

// The outside clients are librdkafka's: Debian's kcat and
// python3-confluent-kafka (scripts/install-peers.sh installs both). Against
// kfake they need no special settings: librdkafka >= 1.0 asks for the API
// versions (api.version.request=true is its default), so neither
// api.version.request nor broker.version.fallback is set. Checked with kcat
// 1.7.1 and python3-confluent-kafka 1.7.0, both on librdkafka 2.0.2
// (Debian bookworm).

// kafkaCluster starts an in-process kfake cluster of three brokers with the
// topics (three partitions each) and returns its bootstrap list. The
// brokers listen on 127.0.0.1 ports the kernel picks when they bind (no
// window in which another test could take them); the outside clients get
// them as ordinary addresses, and each broker advertises its own.
func kafkaCluster(t *testing.T, topics ...string) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ",")
}

// kafkaAdmin is franz-go's admin client on brokers, closed at the end of
// the test.
func kafkaAdmin(t *testing.T, brokers string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// needKcat returns the path of kcat (kafkacat on older Debian) or skips.
func needKcat(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"kcat", "kafkacat"} {
		if p, err := exec.LookPath(name); err == nil {
			v, _ := exec.Command(p, "-V").CombinedOutput()
			for _, l := range strings.Split(string(v), "\n") {
				if strings.HasPrefix(l, "Version ") {
					t.Logf("%s %s", name, l)
				}
			}
			return p
		}
	}
	t.Skip("SKIP: kcat not found; run scripts/install-peers.sh")
	return ""
}

// needConfluentKafka returns a python3 that imports confluent_kafka or
// skips.
func needConfluentKafka(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		out, err := exec.Command(py, "-c", "import confluent_kafka as c; print(c.version()[0], c.libversion()[0])").Output()
		if err == nil {
			v := strings.Fields(string(out))
			t.Logf("%s: confluent_kafka %s, librdkafka %s", py, v[0], v[1])
			return py
		}
	}
	t.Skip("SKIP: python3-confluent-kafka not installed (apt-get install python3-confluent-kafka, or scripts/install-peers.sh)")
	return ""
}

// peer runs an outside client to completion within 30 s, with stdin,
// and returns its stdout; a failure fails the test with its stderr.
func peer(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// kafkaMsg is a message as an outside client read it, in the shape of
// kcat -J (the python script prints the same).
type kafkaMsg struct {
	Topic     string   `json:"topic"`
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	TS        int64    `json:"ts"`
	Headers   []string `json:"headers"` // name, value, name, value...
	Key       *string  `json:"key"`
	Payload   string   `json:"payload"`
}

func (m kafkaMsg) header(name string) string {
	for i := 0; i+1 < len(m.Headers); i += 2 {
		if m.Headers[i] == name {
			return m.Headers[i+1]
		}
	}
	return ""
}

func parseKafkaMsgs(t *testing.T, out string) []kafkaMsg {
	t.Helper()
	var msgs []kafkaMsg
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m kafkaMsg
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a message: %q: %v", l, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// The events TestKafkaOutsideReaders sends: kafkaPerTag of each tag,
// event i of a tag at kafkaBase + i ms, keyed by user.
const kafkaPerTag = 300

var (
	kafkaTags = []string{"app.web", "app.db"}
	kafkaBase = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
)

func kafkaUser(i int) string { return "u" + strconv.Itoa(i%13) }

// checkKafkaOut checks what a reader got against the events sent: every
// one once in the topic of its tag, value, key, timestamp and headers as
// docs/kafka.md says, each event_id distinct; with part, keyed messages
// on the partition part names for their key.
func checkKafkaOut(t *testing.T, msgs []kafkaMsg, part map[string]int32) {
	t.Helper()
	if len(msgs) != kafkaPerTag*len(kafkaTags) {
		t.Errorf("%d messages, want %d", len(msgs), kafkaPerTag*len(kafkaTags))
	}
	seen := map[string]bool{}
	ids := map[string]bool{}
	for _, m := range msgs {
		tag := m.header("tag")
		if want := "logs." + strings.TrimPrefix(tag, "app."); m.Topic != want {
			t.Fatalf("tag %q in topic %s, want %s", tag, m.Topic, want)
		}
		var rec struct {
			I    int    `json:"i"`
			User string `json:"user"`
			Msg  string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(m.Payload), &rec); err != nil {
			t.Fatalf("value %q: %v", m.Payload, err)
		}
		k := fmt.Sprintf("%s/%d", tag, rec.I)
		if seen[k] {
			t.Fatalf("%s read twice", k)
		}
		seen[k] = true
		if rec.User != kafkaUser(rec.I) || rec.Msg != "héllo wörld" {
			t.Fatalf("value %s", m.Payload)
		}
		if m.Key == nil || *m.Key != rec.User {
			t.Fatalf("%s: key %v, want %s", k, m.Key, rec.User)
		}
		if want := kafkaBase.UnixMilli() + int64(rec.I); m.TS != want {
			t.Fatalf("%s: timestamp %d, want the event time %d", k, m.TS, want)
		}
		id := m.header("event_id")
		if b, err := hex.DecodeString(id); err != nil || len(b) != 28 {
			t.Fatalf("%s: event_id %q is not 56 hex digits", k, id)
		}
		if ids[id] {
			t.Fatalf("%s: event_id %s twice", k, id)
		}
		ids[id] = true
		if p, ok := part[rec.User]; ok && m.Partition != p {
			t.Fatalf("%s: key %s on partition %d, librdkafka's murmur2 partitioner says %d", k, rec.User, m.Partition, p)
		}
	}
	for _, tag := range kafkaTags {
		for i := range kafkaPerTag {
			if !seen[fmt.Sprintf("%s/%d", tag, i)] {
				t.Fatalf("%s/%d missing", tag, i)
			}
		}
	}
}

// pyConsume reads topics as group argv[2] with read_committed until it
// has argv[3] messages (and half a second more, to see any extra one), and
// prints them as kcat -J does. With argv[4] (a topic) and argv[5] (keys
// separated by commas) it first produces one message per key there with
// librdkafka's murmur2 partitioner, the Java client's, and prints
// {"probe": {key: partition}}.
const pyConsume = `
import json, sys, time
from confluent_kafka import Consumer, Producer
brokers, group, want, probe, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
topics = sys.argv[6:]
if probe:
    got = {}
    def done(err, m):
        if err: sys.exit("probe: %s" % err)
        got[m.key().decode()] = m.partition()
    p = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2"})
    for k in keys.split(","):
        p.produce(probe, key=k.encode(), value=b"x", on_delivery=done)
    if p.flush(20): sys.exit("probe: not delivered")
    print(json.dumps({"probe": got}))
c = Consumer({"bootstrap.servers": brokers, "group.id": group, "isolation.level": "read_committed",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe(topics)
n, deadline, extra = 0, time.time() + 20, None
while time.time() < deadline and (extra is None or time.time() < extra):
    m = c.poll(0.1)
    if m is None: continue
    if m.error(): sys.exit("consume: %s" % m.error())
    hs = []
    for k, v in m.headers() or []: hs += [k, v.decode()]
    key = m.key().decode() if m.key() is not None else None
    print(json.dumps({"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "ts": m.timestamp()[1],
                      "headers": hs, "key": key, "payload": m.value().decode()}), flush=True)
    n += 1
    if n >= want and extra is None: extra = time.time() + 0.5
c.close()
`

// TestKafkaOutsideReaders: forward client -> logship aggregator -> kafka
// output (topic logs.{tag[1]}, key user) -> kfake, read back by kcat and
// by librdkafka's python Consumer with read_committed: every event once,
// value, key, timestamp, tag and event_id headers, and keyed messages on
// the partition librdkafka's murmur2 partitioner (the Java client's)
// picks.
func TestKafkaOutsideReaders(t *testing.T) {
	brokers := kafkaCluster(t, "logs.web", "logs.db", "probe.kcat", "probe.py")
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	cfg := filepath.Join(dir, "aggregator.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
service: {data_dir: %s, http_listen: ""}
buffer: {partitions: 2, segment_bytes: 1MiB, max_bytes: 64MiB, sync_interval: 20ms}
inputs:
  - {type: forward, listen: %s}
outputs:
  - type: kafka
    brokers: [%s]
    topic: logs.{tag[1]}
    key: user
    linger: 5ms
`, filepath.Join(dir, "data"), addr, brokers))
	start(t, "aggregator", "-c", cfg)
	waitListening(t, addr)

	host, portS, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portS)
	lg, err := fluent.New(fluent.Config{FluentHost: host, FluentPort: port, SubSecondPrecision: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range kafkaPerTag {
		for _, tag := range kafkaTags {
			rec := map[string]any{"i": i, "user": kafkaUser(i), "msg": "héllo wörld"}
			if err := lg.PostWithTime(tag, kafkaBase.Add(time.Duration(i)*time.Millisecond), rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}

	// Wait until Kafka holds every event, so that each reader sees all of
	// them whichever runs.
	adm := kafkaAdmin(t, brokers)
	testutil.CheckFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ends, err := adm.ListEndOffsets(ctx, "logs.web", "logs.db")
		if err != nil {
			return err
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		if n < kafkaPerTag*int64(len(kafkaTags)) {
			return fmt.Errorf("%d messages in Kafka", n)
		}
		return nil
	})
	var keys []string
	for i := range 13 {
		keys = append(keys, kafkaUser(i))
	}

	t.Run("kcat", func(t *testing.T) {
		kcat := needKcat(t)
		// librdkafka's own default partitioner is consistent_random (CRC32);
		// murmur2 is the Java client's.
		var in strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&in, "%s:x\n", k)
		}
		peer(t, in.String(), kcat, "-P", "-b", brokers, "-t", "probe.kcat", "-K:", "-X", "topic.partitioner=murmur2")
		part := map[string]int32{}
		for _, m := range parseKafkaMsgs(t, peer(t, "", kcat, "-C", "-b", brokers, "-t", "probe.kcat", "-e", "-q", "-J")) {
			part[*m.Key] = m.Partition
		}
		if len(part) != len(keys) {
			t.Fatalf("probe: %d keys back, want %d", len(part), len(keys))
		}
		var msgs []kafkaMsg
		for _, topic := range []string{"logs.web", "logs.db"} {
			// isolation.level=read_committed is librdkafka's default; said
			// here for the reader.
			out := peer(t, "", kcat, "-C", "-b", brokers, "-t", topic, "-e", "-q", "-J", "-X", "isolation.level=read_committed")
			msgs = append(msgs, parseKafkaMsgs(t, out)...)
		}
		checkKafkaOut(t, msgs, part)
	})

	t.Run("confluent-kafka", func(t *testing.T) {
		py := needConfluentKafka(t)
		out := peer(t, "", py, "-c", pyConsume, brokers, "e2e-py", strconv.Itoa(kafkaPerTag*len(kafkaTags)),
			"probe.py", strings.Join(keys, ","), "logs.web", "logs.db")
		first, rest, _ := strings.Cut(out, "\n")
		var probe struct {
			Probe map[string]int32 `json:"probe"`
		}
		if err := json.Unmarshal([]byte(first), &probe); err != nil || len(probe.Probe) != len(keys) {
			t.Fatalf("probe: %q: %v", first, err)
		}
		checkKafkaOut(t, parseKafkaMsgs(t, rest), probe.Probe)
	})
}

// pyProduce writes argv[2] JSON messages {"i": i, "src": "py"} with the
// header tag=py.x through an idempotent producer; then, with a
// transactional one, 50 messages tagged py.aborted in a transaction it
// aborts (flushed first, so that they are in the log) and 50 tagged py.txn
// in one it commits, all on partition 0: the committed ones come after the
// aborted ones there.
const pyProduce = `
import json, sys
from confluent_kafka import Producer
brokers, n, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 5})
for i in range(n):
    p.produce(topic, key=b"k%d" % i, value=json.dumps({"i": i, "src": "py"}).encode(), headers=[("tag", b"py.x")])
if p.flush(20): sys.exit("idempotent producer: not delivered")
t = Producer({"bootstrap.servers": brokers, "transactional.id": "e2e-py"})
t.init_transactions(20)
t.begin_transaction()
for i in range(50):
    t.produce(topic, value=json.dumps({"i": i, "src": "aborted"}).encode(), headers=[("tag", b"py.aborted")], partition=0)
t.flush(20)
t.abort_transaction(20)
t.begin_transaction()
for i in range(50):
    t.produce(topic, value=json.dumps({"i": i, "src": "txn"}).encode(), headers=[("tag", b"py.txn")], partition=0)
t.commit_transaction(20)
`

// TestKafkaOutsideWriters: kcat and librdkafka's python Producer (plain,
// idempotent and transactional) write into a topic; a logship agent with
// the kafka input writes the file: every message once with the tag of its
// header (or the topic without one), nothing of an aborted transaction.
func TestKafkaOutsideWriters(t *testing.T) {
	brokers := kafkaCluster(t, "in")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.log")
	cfg := filepath.Join(dir, "agent.yaml")
	writeFile(t, cfg, agentConfig(filepath.Join(dir, "data"), "", fmt.Sprintf(`
  - type: kafka
    brokers: [%s]
    topics: [in]
    group: e2e
    commit_interval: 100ms`, brokers), out))
	p := start(t, "agent", "-c", cfg)
	// The agent is up once its consumer joined the group.
	adm := kafkaAdmin(t, brokers)
	testutil.CheckFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, "e2e")
		if err != nil {
			return err
		}
		if g := gs["e2e"]; g.State != "Stable" || len(g.Members) != 1 {
			return fmt.Errorf("group e2e: %s, %d members", g.State, len(g.Members))
		}
		return nil
	})
	const n = 300
	want := map[string]int{}

	t.Run("kcat", func(t *testing.T) {
		kcat := needKcat(t)
		var in strings.Builder
		for i := range n {
			fmt.Fprintf(&in, "k%d:{\"i\":%d,\"src\":\"kcat\"}\n", i, i)
		}
		peer(t, in.String(), kcat, "-P", "-b", brokers, "-t", "in", "-K:", "-H", "tag=kcat.x")
		peer(t, `{"i":0,"src":"kcat, no header"}`+"\n", kcat, "-P", "-b", brokers, "-t", "in")
		for _, l := range waitTagCount(t, out, "kcat.x", n) {
			if l["src"] != "kcat" {
				t.Fatalf("record %v", l)
			}
		}
		if got := waitTagCount(t, out, "in", 1); got[0]["src"] != "kcat, no header" {
			t.Fatalf("record %v", got[0])
		}
		want["kcat.x"], want["in"] = n, 1
	})

	t.Run("confluent-kafka", func(t *testing.T) {
		py := needConfluentKafka(t)
		peer(t, "", py, "-c", pyProduce, brokers, strconv.Itoa(n), "in")
		waitTagCount(t, out, "py.x", n)
		waitTagCount(t, out, "py.txn", 50)
		if got := byTag(t, out)["py.aborted"]; len(got) > 0 {
			t.Fatalf("%d messages of the aborted transaction read, first %v", len(got), got[0])
		}
		want["py.x"], want["py.txn"] = n, 50
	})

	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := byTag(t, out)
	for tag, lines := range got {
		if len(lines) != want[tag] {
			t.Errorf("after the stop: %s: %d events, want %d", tag, len(lines), want[tag])
		}
	}
	t.Logf("events per tag in the file: %v", want)
}
