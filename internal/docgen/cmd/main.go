// Command docgen prints the config reference; `make docs` runs it.
package main

import (
	"os"

	"github.com/logship/logship/internal/docgen"
	"github.com/logship/logship/plugins/all"
)

func main() {
	_, _ = os.Stdout.Write(docgen.Generate(all.Registry()))
}
