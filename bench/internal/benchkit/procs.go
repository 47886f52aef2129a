package benchkit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/logship/logship/plugins/forwardproto"
)

// PeakRSS is a process's peak resident set size in bytes (VmHWM of
// /proc/PID/status).
func PeakRSS(pid int) (int64, error) {
	return statusKB(pid, "VmHWM:")
}

func statusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, key) {
			continue
		}
		f := strings.Fields(line[len(key):])
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status %s %w", pid, key, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// WriteBytes is what a process has caused to be sent to the storage layer
// (write_bytes of /proc/PID/io); -1 when the kernel does not say.
func WriteBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// Usage is a process's resource use at one moment.
type Usage struct {
	User, Sys  time.Duration // utime and stime
	PeakRSS    int64         // VmHWM, bytes
	WriteBytes int64         // /proc/PID/io write_bytes, -1 unknown
}

// CPU is User+Sys.
func (u Usage) CPU() time.Duration { return u.User + u.Sys }

// ReadUsage reads a running process's Usage from /proc.
func ReadUsage(pid int) (Usage, error) {
	u, s, err := CPUTimes(pid)
	if err != nil {
		return Usage{}, err
	}
	rss, err := PeakRSS(pid)
	if err != nil {
		return Usage{}, err
	}
	return Usage{User: u, Sys: s, PeakRSS: rss, WriteBytes: WriteBytes(pid)}, nil
}

// Command is a logship process of either role with a config of its own.
type Command struct {
	Bin    string // the binary, e.g. bin/logship
	Role   string // agent or aggregator
	Config string // the config file's path
	// Ready is polled every 20 ms after the start until it returns nil, at
	// most 30 s: WaitListening of an input's address, or HTTPReady.
	Ready  func() error
	Stderr io.Writer
}

// Start starts the process and returns once it is ready.
func (c Command) Start() (*Proc, error) {
	cmd := exec.Command(c.Bin, c.Role, "-c", c.Config)
	cmd.Stdout = c.Stderr
	cmd.Stderr = c.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, graceful: true}
	if err := poll(c.Ready, 30*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s %s: %w", c.Role, c.Config, err)
	}
	return p, nil
}

// StartFluentBit starts Fluent Bit on the config file path (classic or
// YAML, by its name) and returns once ready returns nil (polled, at most
// 30 s).
func StartFluentBit(bin, path string, ready func() error, stderr io.Writer) (*Proc, error) {
	cmd := exec.Command(bin, "-c", path)
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd}
	if err := poll(ready, 30*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("fluent-bit %s: %w", path, err)
	}
	return p, nil
}

func poll(f func() error, timeout time.Duration) error {
	if f == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Listening is a Ready function: addr accepts TCP connections.
func Listening(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// HTTPReady is a Ready function: GET url answers 200 (logship's /readyz,
// Fluent Bit's /api/v1/health).
func HTTPReady(url string) func() error {
	return func() error {
		cl := http.Client{Timeout: time.Second}
		resp, err := cl.Get(url)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

var chunkSeq atomic.Uint64

// chunkSalt makes chunk ids of different runs differ: receivers dedup on
// them.
var chunkSalt = func() (s [8]byte) {
	_, _ = rand.Read(s[:])
	return s
}()

// NewChunkID returns a fresh chunk id: 16 bytes (a per-process salt and a
// sequence number), base64 as by convention.
func NewChunkID() string {
	var id [16]byte
	copy(id[:], chunkSalt[:])
	binary.BigEndian.PutUint64(id[8:], chunkSeq.Add(1))
	return base64.StdEncoding.EncodeToString(id[:])
}

// SyncSender sends PackedForward chunks of entries (n events) with tag on
// c, one at a time: each is sent with a fresh `chunk` option and the next
// only after its ack, as fluent-logger-golang with RequestAck and Fluent
// Bit's out_forward with require_ack_response do. more is called before
// each chunk and ends the loop when it returns false. It returns each
// chunk's ack latency.
func SyncSender(c net.Conn, tag string, entries []byte, n int, more func() bool) ([]time.Duration, error) {
	enc := forwardproto.NewEncoder()
	dec := forwardproto.NewDecoder(c, forwardproto.Limits{})
	var lat []time.Duration
	var buf []byte
	for more() {
		chunk := NewChunkID()
		var err error
		buf, err = enc.AppendPackedForward(buf[:0], tag, entries, n, chunk, forwardproto.CompressNone)
		if err != nil {
			return lat, err
		}
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		s := time.Now()
		if _, err := c.Write(buf); err != nil {
			return lat, err
		}
		got, err := dec.NextAck()
		if err != nil {
			return lat, fmt.Errorf("waiting for the ack of %s: %w", chunk, err)
		}
		lat = append(lat, time.Since(s))
		if got != chunk {
			return lat, fmt.Errorf("ack %q for chunk %q", got, chunk)
		}
	}
	return lat, nil
}

// SendChunks sends chunks chunks of entries (n events each) to addr over
// conns synchronous connections (SyncSender; connection i uses tag
// tagPrefix+i) and returns every chunk's ack latency, sorted.
func SendChunks(addr string, conns int, tagPrefix string, entries []byte, n int, chunks int64) ([]time.Duration, error) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		lats = make([][]time.Duration, conns)
		errs = make([]error, conns)
	)
	more := func() bool { return next.Add(1) <= chunks }
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			lats[i], errs[i] = SyncSender(c, tagPrefix+strconv.Itoa(i), entries, n, more)
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return SortDurations(all), errors.Join(errs...)
}

// LineCounter counts the complete lines of a file that grows (and may not
// exist yet); Count reads only what was added since its last call.
type LineCounter struct {
	Path string
	off  int64
	n    int64
}

// Count returns the number of complete lines so far.
func (l *LineCounter) Count() (int64, error) {
	f, err := os.Open(l.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return 0, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadSlice('\n')
		if err == nil {
			l.off += int64(len(line))
			l.n++
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			l.off += int64(len(line))
			continue
		}
		// A partial last line is read again next time.
		return l.n, nil
	}
}

// DiskBandwidth is the result of FdatasyncBandwidth.
type DiskBandwidth struct {
	Bytes   int64
	Syncs   int
	Elapsed time.Duration
}

// MBps is the bandwidth in MB/s (10^6 bytes).
func (d DiskBandwidth) MBps() float64 { return float64(d.Bytes) / d.Elapsed.Seconds() / 1e6 }

// FdatasyncBandwidth measures the disk under path's directory: it appends
// blocks of block bytes to a new file at path, each followed by
// fdatasync, for d, and removes the file.
func FdatasyncBandwidth(path string, block int, d time.Duration) (DiskBandwidth, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return DiskBandwidth{}, err
	}
	defer func() { _ = f.Close(); _ = os.Remove(path) }()
	buf := bytes.Repeat([]byte{'x'}, block)
	var r DiskBandwidth
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := f.Write(buf); err != nil {
			return r, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return r, err
		}
		r.Bytes += int64(block)
		r.Syncs++
	}
	r.Elapsed = time.Since(t0)
	return r, nil
}
