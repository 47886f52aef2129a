// Command deb builds logship's Debian package from the repository:
//
//	go run ./deploy/deb -version 1.2.3 -out dist/
//
// writes dist/logship_1.2.3_amd64.deb holding /usr/bin/logship, both systemd
// units in /usr/lib/systemd/system, and /etc/logship/{agent,aggregator}.yaml
// as conffiles. Its postinst creates the logship system user (in groups adm
// and systemd-journal) and reloads systemd when systemd runs; no service is
// enabled, the admin edits the config first.
//
// The package is written directly (an ar archive of debian-binary,
// control.tar.gz and data.tar.gz), so building needs neither dpkg nor a
// packaging library: nfpm, the library the issue named, pulls go-git and
// some thirty modules into go.mod for what is a few hundred lines here.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// file is one entry of the package's data tree.
type file struct {
	path     string // absolute path on the target system
	mode     int64
	body     []byte
	conffile bool
}

// pkg is what goes into one .deb.
type pkg struct {
	version string // Debian version
	arch    string // Debian architecture
	files   []file
	mtime   time.Time
}

const (
	postinst = `#!/bin/sh
set -e
if [ "$1" = configure ]; then
	if ! getent passwd logship >/dev/null; then
		adduser --system --group --home /var/lib/logship --no-create-home --quiet logship
	fi
	for g in adm systemd-journal; do
		if getent group "$g" >/dev/null; then adduser --quiet logship "$g"; fi
	done
	if [ -z "$2" ]; then
		# First install: the configs may hold shared keys.
		chgrp logship /etc/logship/agent.yaml /etc/logship/aggregator.yaml
		chmod 0640 /etc/logship/agent.yaml /etc/logship/aggregator.yaml
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
exit 0
`
	prerm = `#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop logship-agent.service logship-aggregator.service >/dev/null 2>&1 || true
	systemctl disable logship-agent.service logship-aggregator.service >/dev/null 2>&1 || true
fi
exit 0
`
	postrm = `#!/bin/sh
set -e
if [ "$1" = purge ]; then
	rm -rf /var/lib/logship /var/lib/logship-aggregator
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
exit 0
`
)

func main() {
	version := flag.String("version", "", "package version (a leading v is dropped); default: git describe")
	out := flag.String("out", "dist", "output directory")
	binary := flag.String("binary", "", "the logship binary to package; default: built now for GOARCH")
	arch := flag.String("arch", "", "Debian architecture; default: GOARCH")
	flag.Parse()
	path, err := run(*version, *out, *binary, *arch)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func run(version, out, binary, arch string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	if version == "" {
		b, err := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
		if err != nil {
			return "", fmt.Errorf("no -version and git describe failed: %w", err)
		}
		version = strings.TrimSpace(string(b))
	}
	if arch == "" {
		arch = os.Getenv("GOARCH")
		if arch == "" {
			arch = runtime.GOARCH
		}
	}
	if binary == "" {
		tmp, err := os.MkdirTemp("", "logship-deb")
		if err != nil {
			return "", err
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		binary = filepath.Join(tmp, "logship")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", binary, "./cmd/logship")
		cmd.Dir, cmd.Stderr = root, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+arch)
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("go build: %w", err)
		}
	}
	p := pkg{version: debVersion(version), arch: arch, mtime: time.Now()}
	for _, f := range []struct {
		src, dst string
		mode     int64
		conffile bool
	}{
		{binary, "/usr/bin/logship", 0o755, false},
		{filepath.Join(root, "deploy/systemd/logship-agent.service"), "/usr/lib/systemd/system/logship-agent.service", 0o644, false},
		{filepath.Join(root, "deploy/systemd/logship-aggregator.service"), "/usr/lib/systemd/system/logship-aggregator.service", 0o644, false},
		{filepath.Join(root, "conf/examples/agent.yaml"), "/etc/logship/agent.yaml", 0o644, true},
		{filepath.Join(root, "conf/examples/aggregator.yaml"), "/etc/logship/aggregator.yaml", 0o644, true},
	} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			return "", err
		}
		p.files = append(p.files, file{path: f.dst, mode: f.mode, body: b, conffile: f.conffile})
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(out, fmt.Sprintf("logship_%s_%s.deb", p.version, p.arch))
	var buf bytes.Buffer
	if err := p.write(&buf); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, buf.Bytes(), 0o644)
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run inside the logship module")
	}
	return filepath.Dir(gomod), nil
}

var nonVersion = regexp.MustCompile(`[^A-Za-z0-9.+~]`)

// debVersion turns a git describe output into a Debian version: v1.2.3 ->
// 1.2.3, v1.2.3-4-gabc -> 1.2.3+4+gabc, abc1234 -> 0.0~gitabc1234.
func debVersion(v string) string {
	v = nonVersion.ReplaceAllString(strings.TrimPrefix(v, "v"), "+")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0.0~git" + v
	}
	return v
}

// write writes the .deb: an ar archive of debian-binary, control.tar.gz
// and data.tar.gz, in that order (dpkg requires it).
func (p *pkg) write(w io.Writer) error {
	data, size, sums, err := p.dataTar()
	if err != nil {
		return err
	}
	control, err := p.controlTar(size, sums)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "!<arch>\n"); err != nil {
		return err
	}
	for _, m := range []struct {
		name string
		body []byte
	}{{"debian-binary", []byte("2.0\n")}, {"control.tar.gz", control}, {"data.tar.gz", data}} {
		hdr := fmt.Sprintf("%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, p.mtime.Unix(), 0, 0, 0o100644, len(m.body))
		body := m.body
		if len(body)%2 == 1 {
			body = append(body[:len(body):len(body)], '\n')
		}
		if _, err := io.WriteString(w, hdr); err != nil {
			return err
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
	}
	return nil
}

// tarball collects entries into a gzipped tar, creating the parent
// directories of each file once.
type tarball struct {
	buf   bytes.Buffer
	gz    *gzip.Writer
	tw    *tar.Writer
	dirs  map[string]bool
	mtime time.Time
}

func newTarball(mtime time.Time) *tarball {
	t := &tarball{dirs: map[string]bool{".": true}, mtime: mtime}
	t.gz = gzip.NewWriter(&t.buf)
	t.tw = tar.NewWriter(t.gz)
	return t
}

func (t *tarball) dir(name string) error {
	if t.dirs[name] {
		return nil
	}
	if err := t.dir(filepath.Dir(name)); err != nil {
		return err
	}
	t.dirs[name] = true
	return t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./" + name + "/", Mode: 0o755,
		Uname: "root", Gname: "root", ModTime: t.mtime, Format: tar.FormatGNU})
}

func (t *tarball) file(name string, mode int64, body []byte) error {
	if err := t.dir(filepath.Dir(name)); err != nil {
		return err
	}
	if err := t.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + name, Mode: mode, Size: int64(len(body)),
		Uname: "root", Gname: "root", ModTime: t.mtime, Format: tar.FormatGNU}); err != nil {
		return err
	}
	_, err := t.tw.Write(body)
	return err
}

func (t *tarball) bytes() ([]byte, error) {
	if err := t.tw.Close(); err != nil {
		return nil, err
	}
	if err := t.gz.Close(); err != nil {
		return nil, err
	}
	return t.buf.Bytes(), nil
}

func (p *pkg) dataTar() (tgz []byte, size int64, md5sums string, err error) {
	t := newTarball(p.mtime)
	var sums strings.Builder
	for _, f := range p.files {
		name := strings.TrimPrefix(f.path, "/")
		if err := t.file(name, f.mode, f.body); err != nil {
			return nil, 0, "", err
		}
		size += int64(len(f.body))
		fmt.Fprintf(&sums, "%x  %s\n", md5.Sum(f.body), name)
	}
	b, err := t.bytes()
	return b, size, sums.String(), err
}

func (p *pkg) controlTar(size int64, md5sums string) ([]byte, error) {
	control := fmt.Sprintf(`Package: logship
Version: %s
Architecture: %s
Maintainer: logship developers <logship@users.noreply.github.com>
Installed-Size: %d
Depends: adduser
Section: admin
Priority: optional
Homepage: https://github.com/logship/logship
Description: log shipper that does not lose logs
 logship tails files and receives forward, syslog and Kafka input into a
 durable on-disk buffer and ships it with acknowledgements. One binary runs
 as the per-host agent (logship-agent.service) or the central aggregator
 (logship-aggregator.service). Configs are in /etc/logship.
`, p.version, p.arch, (size+1023)/1024)
	var conffiles strings.Builder
	for _, f := range p.files {
		if f.conffile {
			conffiles.WriteString(f.path + "\n")
		}
	}
	t := newTarball(p.mtime)
	for _, f := range []struct {
		name string
		mode int64
		body string
	}{
		{"control", 0o644, control}, {"conffiles", 0o644, conffiles.String()}, {"md5sums", 0o644, md5sums},
		{"postinst", 0o755, postinst}, {"prerm", 0o755, prerm}, {"postrm", 0o755, postrm},
	} {
		if err := t.file(f.name, f.mode, []byte(f.body)); err != nil {
			return nil, err
		}
	}
	return t.bytes()
}
