package agent

import "github.com/logship/logship/conf"

// DataDir is the agent's default data_dir: a host path that survives the
// process (a hostPath volume in a Kubernetes DaemonSet, a systemd
// StateDirectory on a VM).
const DataDir = "/var/lib/logship"

// KafkaMemoryLimit is the agent's default service.memory_limit when it
// publishes to Kafka itself: the kafka output keeps up to max_in_flight
// batches per buffer partition encoded in memory (about 40MB live at
// 500k events/s), and a 48MiB limit made the collector cost 70% more CPU
// per event there (go run ./bench/scenarios -only c).
const KafkaMemoryLimit = 128 << 20

// MemoryLimit is the agent's default service.memory_limit: the Go
// runtime's soft limit, which keeps an agent beside applications under
// 64MiB resident with 40 synchronous clients at full load and under
// backpressure (go run ./bench/rss), where the collector's usual pacing
// lets the heap reach twice what is live. Its live heap on the default
// config stays well below it (the dedup window is 100000 ids on an agent),
// so the collector rarely works harder for it.
const MemoryLimit = 48 << 20

// Role is the agent role: the common defaults (a small buffer: 4
// partitions, 1 GiB; metrics on 127.0.0.1:2020) with a host's own:
// data_dir /var/lib/logship, service.memory_limit 48MiB (128MiB with a
// kafka output), and, when the config lists no inputs, a
// forward input with its defaults (0.0.0.0:24224) so that applications and
// fluentd / fluent-bit on the host can send at once. The node name
// (service.node_name: NODE_NAME or the hostname) is filled in by package
// conf for both roles.
var Role = conf.Role{
	Name: "agent",
	Defaults: func(c *conf.Config) {
		c.Service.DataDir = DataDir
		c.Service.MemoryLimit = MemoryLimit
	},
	DefaultInputs: []string{"forward"},
	Adjust: func(c *conf.Config, serviceSet map[string]int) {
		if _, set := serviceSet["memory_limit"]; set {
			return
		}
		for _, o := range c.Outputs {
			if o.Type == "kafka" {
				c.Service.MemoryLimit = KafkaMemoryLimit
				return
			}
		}
	},
}
