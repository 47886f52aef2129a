package agent

import "github.com/logship/logship/conf"

// Role is the agent role. It runs on the common defaults: a small buffer
// (4 partitions, 1 GiB) and metrics on 127.0.0.1:2020.
var Role = conf.Role{Name: "agent"}
