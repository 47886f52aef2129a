// Package deploy holds what installs logship on a host: the systemd units
// (systemd/), the .deb builder (deb/), and the tests that check them. It has
// no code of its own; see docs/install.md.
package deploy
