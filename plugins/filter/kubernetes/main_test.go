package kubernetes

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine running (a
// request or a watch the filter's Close did not end).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
