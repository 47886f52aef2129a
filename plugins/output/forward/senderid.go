package forward

import (
	"go.uber.org/zap"

	"github.com/logship/logship/plugins/output/internal/senderid"
)

// senderIDFile is the file, under data_dir/output/NAME/, holding the
// sender id.
const senderIDFile = senderid.File

// loadSenderID returns the output's persisted sender id (senderid.Load).
func loadSenderID(dataDir, name string, log *zap.Logger) ([6]byte, error) {
	return senderid.Load(dataDir, name, log, "chunks resent from now on may be stored twice by receivers")
}
