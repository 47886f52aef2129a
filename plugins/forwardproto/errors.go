package forwardproto

import "errors"

// Errors returned by the Decoder, wrapped with %w and context; test with
// errors.Is. ErrMalformed, ErrFrameTooLarge, ErrDecompressedTooLarge and
// ErrTooManyEntries are final: the decoder returns them again on every later call and the
// connection must be closed. Events that are merely invalid (a record that is
// not a map, say) are not errors: they are counted in Request.Dropped.
var (
	// ErrMalformed reports bytes that are not a forward-protocol value: not
	// msgpack (or JSON), not an array where a request is expected, a tag
	// that is not a string, entries or compressed data that are corrupt, an
	// unsupported compression, a HELO, PING, PONG or ack of the wrong shape.
	// Close the connection; do not acknowledge.
	ErrMalformed = errors.New("forwardproto: malformed frame")

	// ErrFrameTooLarge reports a frame longer than Limits.MaxFrameBytes. The
	// client will resend it forever: count it and log it loudly.
	ErrFrameTooLarge = errors.New("forwardproto: frame too large")

	// ErrDecompressedTooLarge reports compressed entries that inflate beyond
	// Limits.MaxDecompressedBytes (a compression bomb, or a limit set too
	// low). Decompression stops at the limit.
	ErrDecompressedTooLarge = errors.New("forwardproto: decompressed entries too large")

	// ErrTooManyEntries reports a request carrying more events than
	// Limits.MaxEntries. Like ErrFrameTooLarge it is final, and the client
	// will resend the request forever: count it and log it loudly.
	ErrTooManyEntries = errors.New("forwardproto: too many events in one request")

	// ErrAuth reports a failed shared-key or username/password handshake,
	// on either side. The error is an *AuthError carrying the reason.
	ErrAuth = errors.New("forwardproto: authentication failed")

	// ErrInvalidChunkID is returned by ParseChunkID for a string that is not
	// the base64 of 16 bytes (epoch 0) or of 24 bytes (with an epoch).
	ErrInvalidChunkID = errors.New("forwardproto: invalid chunk id")
)

// AuthError is a handshake refusal. Reason is the text sent in, or received
// from, a PONG: fluentd's own reasons are "shared_key mismatch" and
// "username/password mismatch". errors.Is(err, ErrAuth) holds.
type AuthError struct {
	Reason string
}

// Error returns the reason, prefixed.
func (e *AuthError) Error() string { return ErrAuth.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrAuth) true.
func (e *AuthError) Is(target error) bool { return target == ErrAuth }
