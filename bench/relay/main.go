// Command relay measures a whole logship process as a forward relay:
//
//	load generator --forward, acks--> logship agent --forward, acks--> counting receiver
//	                                  (forward in -> buffer -> forward out)
//
// It reports events/s, MB/s and the relay process's CPU time per event
// (user+system from /proc), the figure that matters on shared, noisy
// 2-core machines. With -fluent-bit PATH it runs Fluent Bit on the same
// load in the same run (filesystem storage, acks on both sides) and prints
// the ratio.
//
//	go run ./bench/relay -events 2000000
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/logship/logship/bench/internal/benchkit"
	"github.com/logship/logship/plugins/forwardproto"
)

var (
	events    = flag.Int("events", 2_000_000, "events to send")
	chunk     = flag.Int("chunk", 1000, "events per PackedForward chunk")
	eventSize = flag.Int("size", 200, "bytes per event (approximately)")
	conns     = flag.Int("conns", 4, "load generator connections")
	inflight  = flag.Int("inflight", 8, "unacked chunks per connection")
	bin       = flag.String("logship", "bin/logship", "the logship binary")
	fluentBit = flag.String("fluent-bit", "", "a fluent-bit binary to measure on the same load (optional)")
	syncMode  = flag.String("sync", "interval", "buffer.sync of the relay")
	compress  = flag.String("compress", "none", "the relay's forward output compression")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	recv, err := benchkit.StartReceiver()
	if err != nil {
		return err
	}
	defer recv.Stop()
	payload := benchkit.MakeChunk(*chunk, *eventSize)

	res, err := measureLogship(recv, payload)
	if err != nil {
		return err
	}
	res.print("logship")
	if *fluentBit != "" {
		fb, err := measureFluentBit(recv, payload)
		if err != nil {
			return err
		}
		fb.print("fluent-bit")
		fmt.Printf("ratio logship/fluent-bit: %.2fx events/s, %.2fx less CPU per event\n", res.rate()/fb.rate(), float64(fb.cpuPerEvent())/float64(res.cpuPerEvent()))
	}
	return nil
}

type result struct {
	events  int64
	bytes   int64
	elapsed time.Duration
	cpu     time.Duration
}

func (r result) rate() float64              { return float64(r.events) / r.elapsed.Seconds() }
func (r result) cpuPerEvent() time.Duration { return r.cpu / time.Duration(r.events) }
func (r result) print(name string) {
	fmt.Printf("%-10s %d events in %.2fs: %.0f events/s, %.1f MB/s, relay CPU %.2fs = %.3f us/event\n",
		name, r.events, r.elapsed.Seconds(), r.rate(), float64(r.bytes)/r.elapsed.Seconds()/1e6, r.cpu.Seconds(), float64(r.cpu.Nanoseconds())/float64(r.events)/1e3)
}

func measureLogship(recv *benchkit.Receiver, payload []byte) (result, error) {
	dir, err := os.MkdirTemp("", "logship-relay")
	if err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	listen, err := benchkit.FreeAddr()
	if err != nil {
		return result{}, err
	}
	p, err := benchkit.Logship{
		Bin:      *bin,
		Dir:      dir,
		Listen:   listen,
		LogLevel: "warn",
		Buffer:   fmt.Sprintf("  partitions: 4\n  max_bytes: 4GiB\n  segment_bytes: 64MiB\n  sync: %s\n", *syncMode),
		Input:    "    max_pending_acks: 256\n",
		Output:   benchkit.ForwardOutput(recv.Addr(), *compress),
		Stderr:   os.Stderr,
	}.Start()
	if err != nil {
		return result{}, err
	}
	defer p.Stop()
	return drive(listen, p.Pid(), recv, payload)
}

// drive sends the load to addr, waits until the receiver counted every
// event and returns the figures; pid is the relay whose CPU is measured.
func drive(addr string, pid int, recv *benchkit.Receiver, payload []byte) (result, error) {
	start0 := recv.Count()
	cpu0, err := benchkit.CPUTime(pid)
	if err != nil {
		return result{}, err
	}
	chunks := *events / *chunk
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, *conns)
	t0 := time.Now()
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sendConn(addr, w, payload, &next, int64(chunks)); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return result{}, err
	default:
	}
	total := int64(chunks * *chunk)
	for recv.Count()-start0 < total {
		if time.Since(t0) > 10*time.Minute {
			return result{}, fmt.Errorf("receiver counted %d of %d", recv.Count()-start0, total)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	cpu1, err := benchkit.CPUTime(pid)
	if err != nil {
		return result{}, err
	}
	return result{events: total, bytes: int64(chunks) * int64(len(payload)), elapsed: elapsed, cpu: cpu1 - cpu0}, nil
}

func sendConn(addr string, w int, payload []byte, next *atomic.Int64, chunks int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	enc := forwardproto.NewEncoder()
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	sem := make(chan struct{}, *inflight)
	ackErr := make(chan error, 1)
	sent := 0
	var readers sync.WaitGroup
	acks := make(chan struct{}, 1<<16)
	readers.Add(1)
	go func() {
		defer readers.Done()
		for range acks {
			if _, err := dec.NextAck(); err != nil {
				ackErr <- err
				return
			}
			<-sem
		}
	}()
	var buf []byte
	for {
		i := next.Add(1) - 1
		if i >= chunks {
			break
		}
		sem <- struct{}{}
		buf, err = enc.AppendPackedForward(buf[:0], "bench.relay."+strconv.Itoa(w), payload, *chunk, fmt.Sprintf("c-%d-%d", w, i), forwardproto.CompressNone)
		if err != nil {
			return err
		}
		if _, err := c.Write(buf); err != nil {
			return err
		}
		acks <- struct{}{}
		sent++
	}
	close(acks)
	readers.Wait()
	select {
	case err := <-ackErr:
		return err
	default:
	}
	return nil
}

func measureFluentBit(recv *benchkit.Receiver, payload []byte) (result, error) {
	dir, err := os.MkdirTemp("", "fluent-bit-relay")
	if err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	listen, err := benchkit.FreeAddr()
	if err != nil {
		return result{}, err
	}
	p, err := benchkit.FluentBit{Bin: *fluentBit, Dir: dir, Listen: listen, Recv: recv.Addr(), Stderr: os.Stderr}.Start()
	if err != nil {
		return result{}, err
	}
	defer p.Stop()
	return drive(listen, p.Pid(), recv, payload)
}
