// Command scaleout measures aggregators scaling out through Kafka: 1, 2,
// 4, ... logship aggregator processes join one consumer group (the kafka
// input) on an ingest topic, each forwarding to the same counting receiver
// (a downstream tier); once the group is stable the events are produced,
// and it prints, per group size, the events/s from the first produce until
// the receiver had every event, and the CPU time per event of the
// aggregators together and per member.
//
//	make build && go run ./bench/scaleout [-events 1000000] [-members 1,2,4] [-partitions 8]
//
// The Kafka cluster is franz-go's kfake, in this process: it shares the
// machine's cores with the members, so on a 2-core machine the curve says
// how the members share the work, not what more machines would add.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logship/logship/bench/internal/benchkit"
)

var (
	events     = flag.Int("events", 1_000_000, "events produced to the ingest topic")
	membersArg = flag.String("members", "1,2,4", "aggregator group sizes, comma-separated")
	partitions = flag.Int("partitions", 8, "partitions of the ingest topic")
	eventSize  = flag.Int("size", 200, "bytes per event (approximately)")
	bin        = flag.String("logship", "bin/logship", "the logship binary (make build)")
	quiet      = flag.Bool("q", true, "send the processes' logs to /dev/null")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scaleout:", err)
		os.Exit(1)
	}
}

type result struct {
	members int
	elapsed time.Duration
	cpu     []time.Duration
	rss     []int64
}

func run() error {
	var sizes []int
	for _, s := range strings.Split(*membersArg, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-members: %q", s)
		}
		sizes = append(sizes, n)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(3))
	if err != nil {
		return err
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	var results []result
	for _, m := range sizes {
		topic := fmt.Sprintf("ingest-%d", m)
		adm := kadm.NewClient(mustClient(brokers))
		_, err := adm.CreateTopic(context.Background(), int32(*partitions), 1, nil, topic)
		adm.Close()
		if err != nil {
			return err
		}
		r, err := measure(brokers, topic, m)
		if err != nil {
			return fmt.Errorf("%d members: %w", m, err)
		}
		results = append(results, r)
	}
	fmt.Printf("\n%-8s %12s %10s %16s %22s %s\n", "members", "events/s", "speedup", "CPU us/ev (all)", "CPU us/ev per member", "peak RSS MiB per member")
	base := 0.0
	for _, r := range results {
		rate := float64(*events) / r.elapsed.Seconds()
		if base == 0 {
			base = rate
		}
		var total time.Duration
		var per, rss []string
		for i, cpu := range r.cpu {
			total += cpu
			per = append(per, fmt.Sprintf("%.2f", float64(cpu.Microseconds())/float64(*events)))
			rss = append(rss, fmt.Sprintf("%.0f", float64(r.rss[i])/(1<<20)))
		}
		fmt.Printf("%-8d %12.0f %9.2fx %16.2f %22s %s\n", r.members, rate, rate/base, float64(total.Microseconds())/float64(*events), strings.Join(per, " "), strings.Join(rss, " "))
	}
	fmt.Printf("\ncommand: go run ./bench/scaleout -events %d -members %s -partitions %d -size %d\n", *events, *membersArg, *partitions, *eventSize)
	fmt.Println("kfake and the producer run in this process and share the cores with the members: on a 2-core")
	fmt.Println("machine more members cannot add throughput; the per-member CPU column shows the work spread over them.")
	return nil
}

func mustClient(brokers []string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		panic(err)
	}
	return cl
}

// produce writes the events as JSON messages with a tag header, unkeyed.
func produce(brokers []string, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	pad := strings.Repeat("x", max(0, *eventSize-60))
	ctx := context.Background()
	errc := make(chan error, 1)
	for i := range *events {
		v := fmt.Sprintf(`{"seq":%d,"host":"node-%d","log":"%s"}`, i, i%100, pad)
		r := &kgo.Record{Topic: topic, Value: []byte(v), Headers: []kgo.RecordHeader{{Key: "tag", Value: []byte("app.scale")}}}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

// measure starts m aggregators in a new group on an empty topic, each
// forwarding to one counting receiver, waits until the group is stable
// with all of them, then produces the events and times until the receiver
// has every one.
func measure(brokers []string, topic string, m int) (result, error) {
	recv, err := benchkit.StartReceiver()
	if err != nil {
		return result{}, err
	}
	defer recv.Stop()
	dir, err := os.MkdirTemp("", "logship-scaleout")
	if err != nil {
		return result{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	group := fmt.Sprintf("scaleout-%d-%d", m, time.Now().UnixNano())
	var stderr *os.File
	if *quiet {
		stderr, _ = os.Open(os.DevNull)
	} else {
		stderr = os.Stderr
	}
	var procs []*benchkit.Proc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	for i := range m {
		http, err := benchkit.FreeAddr()
		if err != nil {
			return result{}, err
		}
		cfg := fmt.Sprintf(`service:
  data_dir: %s
  http_listen: %q
inputs:
  - type: kafka
    brokers: [%s]
    topics: [%s]
    group: %s
    start_offset: earliest
outputs:
%s`, filepath.Join(dir, fmt.Sprintf("agg%d", i)), http, strings.Join(brokers, ", "), topic, group, benchkit.ForwardOutput(recv.Addr(), ""))
		path := filepath.Join(dir, fmt.Sprintf("agg%d.yaml", i))
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return result{}, err
		}
		p, err := benchkit.Command{Bin: *bin, Role: "aggregator", Config: path, Ready: benchkit.HTTPReady("http://" + http + "/readyz"), Stderr: stderr}.Start()
		if err != nil {
			return result{}, err
		}
		procs = append(procs, p)
	}
	if err := waitStable(brokers, group, m); err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := produce(brokers, topic); err != nil {
		return result{}, err
	}
	if err := recv.WaitCount(int64(*events), 10*time.Minute); err != nil {
		return result{}, err
	}
	r := result{members: m, elapsed: time.Since(start)}
	for _, p := range procs {
		u, err := benchkit.ReadUsage(p.Pid())
		if err != nil {
			return result{}, err
		}
		rss, _ := benchkit.PeakRSS(p.Pid())
		r.cpu = append(r.cpu, u.CPU())
		r.rss = append(r.rss, rss)
	}
	fmt.Printf("%d members: %d events in %s\n", m, *events, r.elapsed.Round(time.Millisecond))
	return r, nil
}

// waitStable waits until the group is Stable with m members, each owning
// at least one partition.
func waitStable(brokers []string, group string, m int) error {
	adm := kadm.NewClient(mustClient(brokers))
	defer adm.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		gs, err := adm.DescribeGroups(context.Background(), group)
		if err == nil {
			if g, ok := gs[group]; ok && g.State == "Stable" && len(g.Members) == m {
				owning := 0
				for _, mem := range g.Members {
					if a, ok := mem.Assigned.AsConsumer(); ok && len(a.Topics) > 0 && len(a.Topics[0].Partitions) > 0 {
						owning++
					}
				}
				if owning == m {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("group %s not stable with %d members after 60s", group, m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
