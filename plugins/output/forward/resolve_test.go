package forward

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// steer sets the output's rendezvous salt so that partition p's first
// choice is want[p] (tests that need a known layout); call it before any
// chunk is handed in.
func steer(t testing.TB, o *Output, want ...string) {
	t.Helper()
	for salt := uint64(1); salt < 1<<22; salt++ {
		o.salt = salt
		ok := true
		for p, a := range want {
			if h := o.home(o.servers, p); h == nil || h.addr != a {
				ok = false
				break
			}
		}
		if ok {
			return
		}
	}
	t.Fatalf("no salt puts partitions on %v", want)
}

// fakeDNS answers lookups of one name from a list the test changes.
type fakeDNS struct {
	mu      sync.Mutex
	name    string
	addrs   []netip.Addr
	err     error
	lookups atomic.Int32
}

func (f *fakeDNS) set(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs, f.err = nil, nil
	for _, a := range addrs {
		f.addrs = append(f.addrs, netip.MustParseAddr(a))
	}
}

func (f *fakeDNS) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	f.lookups.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if host != f.name {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if f.err != nil {
		return nil, f.err
	}
	return slices.Clone(f.addrs), nil
}

// newResolvingOutput is newOutput with a fake resolver, set before Start.
func newResolvingOutput(t *testing.T, dns *fakeDNS, log *zap.Logger, mod func(*Config)) *Output {
	t.Helper()
	cfg := defaultConfig()
	cfg.RetryMin, cfg.RetryMax = conftypes.Duration(10*time.Millisecond), conftypes.Duration(100*time.Millisecond)
	cfg.ConnectTimeout = conftypes.Duration(2 * time.Second)
	cfg.SelfHostname = "sender"
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	o, err := New(pipeline.Settings{Name: "fwd", Type: "forward", DataDir: t.TempDir(), Logger: log, Metrics: pipeline.NopMetrics(pipeline.KindOutput, "fwd")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	o.lookup = dns.lookup
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Stop(context.Background()) })
	return o
}

func waitServers(t *testing.T, o *Output, want ...string) {
	t.Helper()
	slices.Sort(want)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if got := o.Servers(); !slices.Equal(got, want) {
			return fmt.Errorf("servers %v, want %v", got, want)
		}
		return nil
	})
}

// gate is a receiver's emitter that, while closed, holds chunks unstored
// and unacknowledged; open passes them on, fail refuses them.
type gate struct {
	rec    *recorder
	mu     sync.Mutex
	closed bool
	held   []heldChunk
}

type heldChunk struct {
	c   pipeline.Chunk
	ack pipeline.AckFunc
}

func (g *gate) Emit(ctx context.Context, c pipeline.Chunk, ack pipeline.AckFunc) error {
	g.mu.Lock()
	if g.closed {
		c.Entries = slices.Clone(c.Entries)
		g.held = append(g.held, heldChunk{c, ack})
		g.mu.Unlock()
		return nil
	}
	g.mu.Unlock()
	return g.rec.Emit(ctx, c, ack)
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gate) holding() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}

// open stores and acknowledges what it held, and what comes later.
func (g *gate) open() {
	g.mu.Lock()
	g.closed = false
	held := g.held
	g.held = nil
	g.mu.Unlock()
	for _, h := range held {
		_ = g.rec.Emit(context.Background(), h.c, h.ack)
	}
}

// fail refuses what it held (never stored, never acknowledged).
func (g *gate) fail() {
	g.mu.Lock()
	held := g.held
	g.held = nil
	g.mu.Unlock()
	for _, h := range held {
		h.ack(errors.New("refused"))
	}
}

// placement says which receiver stored each partition's chunks among bs;
// a partition on more than one fails the test.
func placement(t *testing.T, bs []pipeline.Batch, recs map[string]*recorder) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, b := range bs {
		for name, r := range recs {
			if len(r.tags()[b.Tag]) == 0 {
				continue
			}
			if prev, ok := out[b.Partition]; ok && prev != name {
				t.Fatalf("partition %d's chunks on %s and %s", b.Partition, prev, name)
			}
			out[b.Partition] = name
		}
	}
	return out
}

// batchesFrom is batches with offsets from off on.
func batchesFrom(partitions, perPartition, n int, off uint64) []pipeline.Batch {
	var bs []pipeline.Batch
	for i := range perPartition {
		for p := range partitions {
			bs = append(bs, batch(p, off+uint64(i), n))
		}
	}
	return bs
}

// TestDNSServersFollowResolution: a name resolving to 2, then 3, then 1
// addresses of three real receivers while chunks flow. Every chunk is
// acknowledged and stored once; a new address takes only the partitions
// that now prefer it; a removed address's chunks in flight complete on it
// (one receiver acks them late) or are sent again elsewhere (the other
// never does).
func TestDNSServersFollowResolution(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	ips := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	recs := map[string]*recorder{}
	gates := map[string]*gate{}
	var addrs []string
	for _, ip := range ips {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		addrs = append(addrs, addr)
		recs[addr] = newRecorder()
		gates[addr] = &gate{rec: recs[addr]}
		receiver(t, addr, nil, gates[addr])
		g := gates[addr]
		t.Cleanup(g.fail) // runs before the receiver's Stop, which waits for acks
	}
	a, b, c := addrs[0], addrs[1], addrs[2]

	dns := &fakeDNS{name: "aggs.test"}
	dns.set(ips[0], ips[1])
	core, logs := observer.New(zapcore.InfoLevel)
	o := newResolvingOutput(t, dns, zap.New(core), func(cf *Config) {
		cf.Servers = []string{net.JoinHostPort("aggs.test", strconv.Itoa(port))}
		cf.ResolveInterval = conftypes.Duration(20 * time.Millisecond)
		cf.AckTimeout = conftypes.Duration(1500 * time.Millisecond)
		cf.MaxInFlight = 4
	})
	waitServers(t, o, a, b)
	if testutil.Value(o.m.servers) != 2 {
		t.Fatal("resolved_servers is not 2")
	}
	const parts = 16

	// 2 addresses: every partition on one of them.
	bs1 := batchesFrom(parts, 4, 5, 100)
	deliverAll(t, o, bs1, 10*time.Second)
	home1 := placement(t, bs1, recs)
	for p, s := range home1 {
		if s != a && s != b {
			t.Fatalf("partition %d on %s", p, s)
		}
	}

	// 3 addresses: only the partitions that now prefer c move, to c.
	dns.set(ips...)
	waitServers(t, o, a, b, c)
	bs2 := batchesFrom(parts, 4, 5, 200)
	deliverAll(t, o, bs2, 10*time.Second)
	home2 := placement(t, bs2, recs)
	moved := 0
	for p := range parts {
		if home2[p] == home1[p] {
			continue
		}
		moved++
		if home2[p] != c {
			t.Fatalf("partition %d moved from %s to %s, not to the new server", p, home1[p], home2[p])
		}
	}
	// Exactly the partitions whose first choice is now c moved.
	o.srvMu.RLock()
	mustMove := 0
	for p := range parts {
		if o.home(o.servers, p).addr == c {
			mustMove++
		}
	}
	o.srvMu.RUnlock()
	if moved != mustMove {
		t.Fatalf("%d of %d partitions moved to the third server, %d prefer it", moved, parts, mustMove)
	}
	t.Logf("2 -> 3 servers: %d of %d partitions moved (all to the new one)", moved, parts)

	// 1 address, while a and b hold chunks in flight: a's are acknowledged
	// late and complete there; b's never are and go to c.
	gates[a].close()
	gates[b].close()
	bs3 := batchesFrom(parts, 6, 5, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := drive(ctx, o, bs3)
	testutil.CheckFor(t, 5*time.Second, func() error {
		if gates[a].holding() == 0 || gates[b].holding() == 0 {
			return errors.New("no chunks in flight on a and b yet")
		}
		return nil
	})
	heldA := gates[a].holding()
	dns.set(ips[2])
	waitServers(t, o, c)
	gates[a].open()
	for _, r := range waitResults(t, res, len(bs3), 15*time.Second) {
		if r.err != nil {
			t.Fatalf("%s: %v", r.b.Tag, r.err)
		}
	}
	all := append(append(append([]pipeline.Batch(nil), bs1...), bs2...), bs3...)
	checkAllArrived(t, all, recs[a], recs[b], recs[c])
	for _, bt := range all {
		n := 0
		for _, r := range recs {
			n += len(r.tags()[bt.Tag])
		}
		if n != 1 {
			t.Fatalf("%s stored %d times", bt.Tag, n)
		}
	}
	if got := len(recs[a].tags()); got < heldA {
		t.Fatalf("a stored %d chunks, fewer than the %d it held", got, heldA)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		o.srvMu.RLock()
		defer o.srvMu.RUnlock()
		if len(o.draining) != 0 {
			return fmt.Errorf("%d servers still draining", len(o.draining))
		}
		return nil
	})
	if testutil.Value(o.m.servers) != 1 {
		t.Fatal("resolved_servers is not 1")
	}
	changes := logs.FilterMessage("forward servers changed").All()
	if len(changes) < 3 {
		t.Fatalf("%d changes logged, want 3", len(changes))
	}
	if m := changes[1].ContextMap()["partitions_moved"]; m != fmt.Sprintf("%d of %d", moved, parts) {
		t.Fatalf("logged partitions_moved %v, counted %d of %d", m, moved, parts)
	}
}

// TestRendezvousMovesFew: over many partitions, adding a server moves only
// the partitions that go to it, removing one only those it had, and the
// spread is even enough.
func TestRendezvousMovesFew(t *testing.T) {
	o := &Output{salt: 0x1234567890ab}
	mk := func(n int) []*server {
		var ss []*server
		for i := range n {
			addr := fmt.Sprintf("10.0.0.%d:24224", i+1)
			ss = append(ss, &server{addr: addr, hash: addrHash(addr)})
		}
		return ss
	}
	const parts = 1024
	for n := 1; n < 8; n++ {
		before, after := mk(n), mk(n+1)
		load := map[string]int{}
		moved := 0
		for p := range parts {
			x, y := o.home(before, p), o.home(after, p)
			load[y.addr]++
			if x.addr != y.addr {
				moved++
				if y != after[n] {
					t.Fatalf("%d -> %d servers: partition %d moved to an old server", n, n+1, p)
				}
			}
		}
		if want := parts / (n + 1); moved < want/2 || moved > want*3/2 {
			t.Fatalf("%d -> %d servers: %d partitions moved, want about %d", n, n+1, moved, want)
		}
		for addr, l := range load {
			if want := parts / (n + 1); l < want/2 || l > want*3/2 {
				t.Fatalf("%d servers: %s has %d partitions, want about %d", n+1, addr, l, want)
			}
		}
		// Removing the new one again moves exactly those back.
		back := 0
		for p := range parts {
			if o.home(after, p) == after[n] {
				back++
				continue
			}
			if o.home(after, p).addr != o.home(before, p).addr {
				t.Fatalf("removing a server moved partition %d, which was not on it", p)
			}
		}
		if back != moved {
			t.Fatalf("removing moved %d, adding moved %d", back, moved)
		}
	}
}

// TestResolveFailureKeepsAddresses: a failed lookup changes nothing and is
// counted; resolve_interval 0 resolves once, retrying until it succeeds.
func TestResolveFailureKeepsAddresses(t *testing.T) {
	dns := &fakeDNS{name: "aggs.test"}
	dns.set("127.0.0.1", "::1", "127.0.0.2") // IPv4 wins over IPv6
	o := newResolvingOutput(t, dns, nil, func(c *Config) {
		c.Servers = []string{"aggs.test:24224", "127.0.0.9:7"}
		c.ResolveInterval = conftypes.Duration(10 * time.Millisecond)
	})
	waitServers(t, o, "127.0.0.1:24224", "127.0.0.2:24224", "127.0.0.9:7")
	dns.fail(&net.DNSError{Err: "server misbehaving", Name: "aggs.test", IsTemporary: true})
	n := dns.lookups.Load()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if dns.lookups.Load() < n+3 {
			return errors.New("not looked up again yet")
		}
		return nil
	})
	waitServers(t, o, "127.0.0.1:24224", "127.0.0.2:24224", "127.0.0.9:7")
	if testutil.Value(o.m.failures.WithLabelValues("fwd", "aggs.test:24224", "resolve")) < 3 {
		t.Fatal("failed lookups not counted")
	}

	// resolve_interval 0: failing at start, then resolved once, then left.
	dns2 := &fakeDNS{name: "late.test"}
	dns2.fail(errors.New("not yet"))
	o2 := newResolvingOutput(t, dns2, nil, func(c *Config) {
		c.Servers = []string{"late.test:24224"}
		c.ResolveInterval = 0
	})
	if got := o2.Servers(); len(got) != 0 {
		t.Fatalf("servers %v before any lookup succeeded", got)
	}
	dns2.set("::1")
	waitServers(t, o2, "[::1]:24224")
	n = dns2.lookups.Load()
	time.Sleep(300 * time.Millisecond) // retry_max is 100ms: a loop would have looked up again
	if got := dns2.lookups.Load(); got != n {
		t.Fatalf("looked up %d more times after resolving once", got-n)
	}
}

// TestSelfHostnameFromNodeName: self_hostname defaults to the service's
// node name; an explicit one wins.
func TestSelfHostnameFromNodeName(t *testing.T) {
	for _, c := range []struct{ node, self, want string }{
		{"node-7", "", "node-7"},
		{"node-7", "mine", "mine"},
	} {
		cfg := defaultConfig()
		cfg.Servers, cfg.SelfHostname = []string{"127.0.0.1:24224"}, c.self
		o, err := New(pipeline.Settings{Name: "fwd", NodeName: c.node}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if o.cfg.SelfHostname != c.want {
			t.Fatalf("self_hostname %q, want %q", o.cfg.SelfHostname, c.want)
		}
		_ = o.Stop(context.Background())
	}
}
