package conftypes

import (
	"testing"
	"time"
)

func TestSizeText(t *testing.T) {
	var s Size
	if err := s.UnmarshalText([]byte("64MiB")); err != nil || s != 64<<20 || s.String() != "64MiB" {
		t.Fatalf("64MiB: %d %q %v", s, s.String(), err)
	}
	for _, bad := range []string{"", "-1", "1.5GiB", "ten"} {
		if err := s.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte(" 250ms")); err != nil || d.D() != 250*time.Millisecond {
		t.Fatalf("250ms: %v %v", d, err)
	}
	for _, bad := range []string{"", "soon", "-1s"} {
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
