package kafka

import (
	"go.uber.org/zap"

	"github.com/logship/logship/plugins/output/internal/senderid"
)

// loadSenderID returns the output's persisted sender id (senderid.Load).
func loadSenderID(dataDir, name string, log *zap.Logger) ([6]byte, error) {
	return senderid.Load(dataDir, name, log, "events resent from now on get new event ids")
}
