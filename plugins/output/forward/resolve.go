package forward

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// errRemoved is what a chunk gets from a server whose address its DNS name
// no longer resolves to: it is sent again, to the partition's next choice.
var errRemoved = errors.New("server address no longer resolved")

// LookupFunc resolves a host name to its addresses (net.Resolver's
// LookupNetIP with network "ip"); tests replace it.
type LookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// entry is one configured server: an address, or a DNS name and a port.
type entry struct {
	raw  string
	host string
	port uint16
	ip   bool // host is an IP literal: nothing to resolve

	addrs   []string // what it resolved to last (ip:port), sorted
	ok      bool     // resolved at least once
	fails   int      // lookups failed in a row
	lastLog time.Time
}

func parseEntries(servers []string) []*entry {
	var es []*entry
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			continue // Validate refused it
		}
		n, _ := strconv.ParseUint(port, 10, 16)
		e := &entry{raw: s, host: host, port: uint16(n)}
		if a, err := netip.ParseAddr(host); err == nil {
			e.ip, e.ok = true, true
			e.addrs = []string{netip.AddrPortFrom(a.Unmap(), e.port).String()}
		}
		es = append(es, e)
	}
	return es
}

// pickFamily keeps the IPv4 addresses when there are any, else the IPv6
// ones: a dual-stack pod has an A and an AAAA record, and is one server.
func pickFamily(addrs []netip.Addr, port uint16) []string {
	var v4, v6 []string
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			v4 = append(v4, netip.AddrPortFrom(a, port).String())
		} else {
			v6 = append(v6, netip.AddrPortFrom(a, port).String())
		}
	}
	out := v4
	if len(out) == 0 {
		out = v6
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hasNames says whether any server is a DNS name.
func (o *Output) hasNames() bool {
	for _, e := range o.entries {
		if !e.ip {
			return true
		}
	}
	return false
}

// resolveAll looks up every name once and applies the union of what they
// resolve to. A name whose lookup fails (or finds nothing) keeps what it
// had. It reports whether every lookup succeeded.
func (o *Output) resolveAll() bool {
	all := true
	for _, e := range o.entries {
		if e.ip {
			continue
		}
		ctx, cancel := context.WithTimeout(o.ctx, o.cfg.ConnectTimeout.D())
		ips, err := o.lookup(ctx, e.host)
		cancel()
		if o.ctx.Err() != nil {
			return false
		}
		var addrs []string
		if err == nil {
			if addrs = pickFamily(ips, e.port); len(addrs) == 0 {
				err = errors.New("no address")
			}
		}
		if err != nil {
			all = false
			e.fails++
			o.m.failure(e.raw, "resolve")
			if now := time.Now(); e.fails == 1 || now.Sub(e.lastLog) >= time.Minute {
				e.lastLog = now
				o.log.Warn("forward server name not resolved; keeping the addresses it had", zap.String("server", e.raw),
					zap.Strings("addresses", e.addrs), zap.Int("failures_in_a_row", e.fails), zap.Error(err))
			}
			continue
		}
		if e.fails > 0 {
			o.log.Info("forward server name resolved again", zap.String("server", e.raw), zap.Int("failures", e.fails))
		}
		e.fails, e.ok, e.addrs = 0, true, addrs
	}
	o.applyEntries()
	return all
}

// resolveLoop resolves the names again every resolve_interval; after a
// failed lookup, sooner (retry_min doubling up to retry_max, and never
// later than resolve_interval). With resolve_interval 0 it ends once every
// name resolved once.
func (o *Output) resolveLoop(ok bool) {
	defer o.wg.Done()
	interval := o.cfg.ResolveInterval.D()
	retry := o.cfg.RetryMin.D()
	for {
		wait := interval
		if !ok {
			wait = retry
			if interval > 0 {
				wait = min(wait, interval)
			}
			retry = min(2*retry, o.cfg.RetryMax.D())
		} else {
			if interval == 0 {
				return
			}
			retry = o.cfg.RetryMin.D()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-o.ctx.Done():
			t.Stop()
			return
		}
		ok = o.resolveAll()
	}
}

// applyEntries makes the servers the union of what the entries resolve
// to: new addresses join at once, gone ones drain (see drain).
func (o *Output) applyEntries() {
	want := map[string]string{} // addr -> host to verify with TLS
	var order []string
	for _, e := range o.entries {
		for _, a := range e.addrs {
			if _, dup := want[a]; !dup {
				want[a] = e.host
				order = append(order, a)
			}
		}
	}
	slices.Sort(order)

	o.srvMu.Lock()
	defer o.srvMu.Unlock()
	if o.ctx.Err() != nil {
		return
	}
	old := o.servers
	have := map[string]*server{}
	for _, s := range old {
		have[s.addr] = s
	}
	var next []*server
	var added, removed []string
	for _, a := range order {
		if s, ok := have[a]; ok {
			next = append(next, s)
			continue
		}
		if s, ok := o.draining[a]; ok && s.revive() {
			delete(o.draining, a)
			next = append(next, s)
		} else {
			next = append(next, newServer(o, a, want[a]))
		}
		added = append(added, a)
	}
	for _, s := range old {
		if _, ok := want[s.addr]; ok {
			continue
		}
		removed = append(removed, s.addr)
		s.remove()
		o.draining[s.addr] = s
		o.wg.Add(1)
		go o.drain(s)
	}
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	o.servers = next
	o.m.servers.Set(float64(len(next)))
	fields := []zap.Field{zap.Strings("added", added), zap.Strings("removed", removed), zap.Int("servers", len(next))}
	if k := int(o.maxPart.Load()) + 1; k > 0 && len(old) > 0 {
		moved := 0
		for p := range k {
			if a, b := o.home(old, p), o.home(next, p); a != nil && b != nil && a.addr != b.addr {
				moved++
			}
		}
		fields = append(fields, zap.String("partitions_moved", fmt.Sprintf("%d of %d", moved, k)))
	}
	o.log.Info("forward servers changed", fields...)
	o.notify()
}

// drain waits until nothing is in flight on a removed server (or
// ack_timeout has passed), then closes its connections: a chunk still
// waiting then is sent again to its partition's next choice.
func (o *Output) drain(s *server) {
	defer o.wg.Done()
	deadline := time.Now().Add(o.cfg.AckTimeout.D())
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if !s.removing() {
			return // revived
		}
		if !s.busy() || time.Now().After(deadline) {
			o.srvMu.Lock()
			if !s.removing() {
				o.srvMu.Unlock()
				return
			}
			delete(o.draining, s.addr)
			s.stop(errRemoved)
			o.m.forget(s.addr)
			o.srvMu.Unlock()
			o.log.Debug("forward server left", zap.String("server", s.addr))
			return
		}
		select {
		case <-tick.C:
		case <-o.ctx.Done():
			return // Stop closes it
		}
	}
}

// salt makes each output's choices its own (from its sender id), so that
// many agents spread their partitions over the whole tier.
func saltOf(id [6]byte) uint64 {
	var b [8]byte
	copy(b[:], id[:])
	return binary.LittleEndian.Uint64(b[:])
}

func addrHash(addr string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(addr))
	return h.Sum64()
}

// score is partition p's rendezvous weight for server s: the partition
// sends to its highest-scored healthy server.
func (o *Output) score(s *server, p int) uint64 {
	x := s.hash ^ o.salt ^ (uint64(p)+1)*0x9e3779b97f4a7c15
	// splitmix64's finalizer
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// home is partition p's first choice among servers, healthy or not.
func (o *Output) home(servers []*server, p int) *server {
	var best *server
	var bs uint64
	for _, s := range servers {
		if sc := o.score(s, p); best == nil || sc > bs || (sc == bs && s.addr < best.addr) {
			best, bs = s, sc
		}
	}
	return best
}

// pick returns the server for partition p's next attempt: its first
// choice when usable, else its highest-scored usable one, else nil.
func (o *Output) pick(p int) *server {
	o.srvMu.RLock()
	defer o.srvMu.RUnlock()
	h := o.home(o.servers, p)
	if h == nil || h.usable() {
		return h
	}
	var best *server
	var bs uint64
	for _, s := range o.servers {
		if s == h {
			continue
		}
		if sc := o.score(s, p); (best == nil || sc > bs || (sc == bs && s.addr < best.addr)) && s.usable() {
			best, bs = s, sc
		}
	}
	return best
}

// Servers returns the addresses the output sends to now, sorted.
func (o *Output) Servers() []string {
	o.srvMu.RLock()
	defer o.srvMu.RUnlock()
	out := make([]string, len(o.servers))
	for i, s := range o.servers {
		out[i] = s.addr
	}
	return out
}
