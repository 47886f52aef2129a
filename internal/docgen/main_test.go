package docgen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/logship/logship/plugins/all"
)

// TestReferenceIsFresh fails when docs/config-reference.md no longer
// matches the code: run `make docs`.
func TestReferenceIsFresh(t *testing.T) {
	want := Generate(all.Registry())
	path := filepath.Join(repoRoot(), "docs", "config-reference.md")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run `make docs`", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/config-reference.md is stale: run `make docs`")
	}
}

// TestEveryKeyDocumented fails when a user-facing config field has no doc
// comment.
func TestEveryKeyDocumented(t *testing.T) {
	for _, line := range strings.Split(string(Generate(all.Registry())), "\n") {
		if strings.HasPrefix(line, "| `") && strings.HasSuffix(line, "|  |") {
			t.Errorf("undocumented key: %s", line)
		}
	}
}
