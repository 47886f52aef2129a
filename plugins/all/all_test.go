package all

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/logship/logship/pipeline"
)

// TestEveryPluginRegistered fails when a plugin folder is missing from
// Factories: plugins/{input,filter,output}/NAME must register type NAME.
func TestEveryPluginRegistered(t *testing.T) {
	reg := Registry()
	found := 0
	for _, kind := range []pipeline.Kind{pipeline.KindInput, pipeline.KindFilter, pipeline.KindOutput} {
		entries, err := os.ReadDir(filepath.Join("..", string(kind)))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.IsDir() || e.Name() == "internal" || e.Name() == "testdata" {
				continue
			}
			found++
			if !slices.Contains(reg.Types(kind), e.Name()) {
				t.Errorf("plugins/%s/%s is not registered in plugins/all", kind, e.Name())
			}
		}
	}
	if found == 0 {
		t.Fatal("found no plugin folders")
	}
}
