// Package conftypes holds the value types config structs share: sizes,
// durations and the tls block. Plugins import it for their config structs
// without depending on the config loader (package conf), which decodes
// these types through encoding.TextUnmarshaler like any other value.
package conftypes

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Size is a byte count written as a plain number or with a binary unit:
// 512KiB, 64MiB, 1GiB (KB/MB/GB are accepted as their decimal values).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize parses "64MiB", "1GiB", "512KiB" or "1048576".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (want a byte count or a number with KiB, MiB, GiB)", s)
	}
	if n > 0 && mult > (1<<62)/n {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

// UnmarshalText parses a size (config files decode through it).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// String formats the size with the largest exact binary unit.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// Duration is a Go duration string: "200ms", "30s", "1h".
type Duration time.Duration

// UnmarshalText parses a Go duration (config files decode through it).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a Go duration such as 200ms, 30s)", b)
	}
	if v < 0 {
		return fmt.Errorf("negative duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// TLS is the shape of every tls block, for servers and clients alike.
type TLS struct {
	// CertFile is the PEM certificate (chain) this side presents.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile.
	KeyFile string `yaml:"key_file"`
	// CAFile is the PEM bundle that verifies the peer. On a server, setting
	// it requires client certificates.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify (clients only) skips verifying the server.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// ServerName (clients only) overrides the name verified in the
	// server's certificate.
	ServerName string `yaml:"server_name"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.CAFile != "" || t.InsecureSkipVerify }
