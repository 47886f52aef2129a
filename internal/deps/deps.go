//go:build tools

package deps

import (
	_ "github.com/fluent/fluent-logger-golang/fluent"
	_ "github.com/klauspost/compress/gzip"
	_ "github.com/nxadm/tail"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/twmb/franz-go/pkg/kgo"
	_ "github.com/vmihailenco/msgpack/v5"
	_ "go.uber.org/goleak"
	_ "go.uber.org/zap"
	_ "gopkg.in/yaml.v3"
)
