// Package agent is the per-host role: a DaemonSet on every Kubernetes node
// or a systemd service on a VM. It tails files (container logs above all)
// and accepts the forward protocol from applications and from fluentd /
// fluent-bit, buffers durably, and ships to the aggregator tier.
//
// The package is where the role is assembled: Role carries its name and
// defaults (a host's share of resources: the common defaults of package
// conf). The lifecycle both roles share (loading, the buffer, the pipeline,
// reload, HTTP, shutdown) is package service. What only a host needs lands
// here next: node identity, the Kubernetes container-log defaults and
// metadata enrichment.
package agent
