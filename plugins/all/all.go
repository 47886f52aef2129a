// Package all names every plugin logship is built with. The engine never
// imports a plugin; the binary passes this list to pipeline.NewRegistry.
package all

import (
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/filter/kubernetes"
	"github.com/logship/logship/plugins/input/dummy"
	"github.com/logship/logship/plugins/input/forward"
	kafkain "github.com/logship/logship/plugins/input/kafka"
	"github.com/logship/logship/plugins/input/tail"
	"github.com/logship/logship/plugins/output/file"
	fwdout "github.com/logship/logship/plugins/output/forward"
	"github.com/logship/logship/plugins/output/kafka"
	"github.com/logship/logship/plugins/output/stdout"
)

// Factories returns the factory of every plugin.
func Factories() []pipeline.Factory {
	return []pipeline.Factory{
		dummy.Factory(),
		forward.Factory(),
		kafkain.Factory(),
		tail.Factory(),
		kubernetes.Factory(),
		file.Factory(),
		fwdout.Factory(),
		kafka.Factory(),
		stdout.Factory(),
	}
}

// Registry returns a registry of every plugin.
func Registry() *pipeline.Registry {
	r, err := pipeline.NewRegistry(Factories()...)
	if err != nil {
		panic(err)
	}
	return r
}
