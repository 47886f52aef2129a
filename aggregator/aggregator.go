package aggregator

import "github.com/logship/logship/conf"

// Role is the aggregator role: more partitions (concurrent outputs from
// many agents), a larger buffer, and metrics on 127.0.0.1:2021 so that an
// agent and an aggregator can share a host in tests and demos.
var Role = conf.Role{Name: "aggregator", Defaults: func(c *conf.Config) {
	c.Service.HTTPListen = "127.0.0.1:2021"
	c.Buffer.Partitions = 8
	c.Buffer.MaxBytes = 4 << 30
}}
