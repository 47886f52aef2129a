// Package agent is the per-host role: a DaemonSet on every Kubernetes node
// or a systemd service on a VM. It tails files (container logs above all)
// and accepts the forward protocol from applications and from fluentd /
// fluent-bit, buffers durably, and ships to the aggregator tier.
//
// Today the role is the generic service (package service) run with the
// agent's defaults (conf.Defaults(conf.RoleAgent)). What only a host
// needs lands here: node identity, the Kubernetes container-log defaults and
// metadata enrichment.
package agent
