package file

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the crash test's child when asked to, and otherwise fails
// the package if a test leaves a goroutine running.
func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}
