//go:build !race

package forwardproto

const raceEnabled = false
