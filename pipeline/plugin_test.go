package pipeline_test

import (
	"context"
	"strings"
	"testing"

	"github.com/logship/logship/pipeline"
)

type cfgA struct{ N int }

func (c *cfgA) Validate() error { return nil }

type cfgB struct{}

func (c *cfgB) Validate() error { return nil }

type nopOut struct{ cfg *cfgA }

func (nopOut) Start(context.Context) error                 { return nil }
func (nopOut) Stop(context.Context) error                  { return nil }
func (nopOut) Write(context.Context, pipeline.Batch) error { return nil }

// TestTypedFactory: a factory hands the plugin its own config type, sets
// the Instance field of its kind only, and refuses a config of another
// type with an error instead of a panic.
func TestTypedFactory(t *testing.T) {
	f := pipeline.NewOutputFactory("nop", func() *cfgA { return &cfgA{N: 3} },
		func(_ pipeline.Settings, c *cfgA) (pipeline.Output, error) { return &nopOut{cfg: c}, nil })
	if f.Kind != pipeline.KindOutput || f.Type != "nop" {
		t.Fatalf("factory %s %s", f.Kind, f.Type)
	}
	cfg := f.NewConfig()
	inst, err := f.Create(pipeline.Settings{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Input != nil || inst.Filter != nil {
		t.Fatalf("instance has fields of another kind: %+v", inst)
	}
	if o, ok := inst.Output.(*nopOut); !ok || o.cfg != cfg || o.cfg.N != 3 {
		t.Fatalf("output %#v did not get its config", inst.Output)
	}
	_, err = f.Create(pipeline.Settings{}, &cfgB{})
	if err == nil || !strings.Contains(err.Error(), "want *pipeline_test.cfgA") {
		t.Fatalf("Create with a config of another type: %v", err)
	}
	if _, err := pipeline.NewRegistry(pipeline.Factory{Type: "x", Kind: pipeline.KindInput, NewConfig: func() pipeline.Config { return &cfgB{} }}); err == nil {
		t.Fatal("a factory made without a constructor was registered")
	}
}
