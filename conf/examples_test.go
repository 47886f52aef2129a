package conf_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/plugins/all"
)

// TestExamplesValidate: every shipped example config is valid for its
// role (aggregator*.yaml for the aggregator, the rest for the agent).
func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		role := agent.Role
		if strings.HasPrefix(filepath.Base(f), "aggregator") {
			role = aggregator.Role
		}
		if _, err := conf.Load(f, role, all.Registry()); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}
