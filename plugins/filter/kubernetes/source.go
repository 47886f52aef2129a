package kubernetes

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/ratelog"
)

// Bounds on what a source may send and the cache may hold.
const (
	maxListBytes  = 64 << 20 // one pod list (a node holds a few hundred pods at most)
	maxEventBytes = 16 << 20 // one watch event
	maxPods       = 10_000   // pods cached
	maxWanted     = 1024     // pods asked for, waiting for the next list
	maxNegative   = 4096     // pods a list did not hold, not asked for again before cache_ttl
	tokenReread   = time.Minute
	keepGoneTTLs  = 5 // a pod no longer listed keeps its metadata for 5 × cache_ttl: its last lines are still read
)

// snapshot is the cache as the records see it: immutable, replaced as a
// whole (copy on write) by the one goroutine that talks to the source.
type snapshot struct {
	gen   uint64
	pods  map[string]*podInfo // namespace/name
	byUID map[string]*podInfo
}

func (s *snapshot) lookup(m *fileMeta) *podInfo {
	if s == nil {
		return nil
	}
	if m.PodUID != "" {
		return s.byUID[m.PodUID]
	}
	return s.pods[m.key()]
}

// lookupResolved is lookup with the key made already.
func (s *snapshot) lookupResolved(r *resolved) *podInfo {
	if s == nil {
		return nil
	}
	if r.meta.PodUID != "" {
		return s.byUID[r.meta.PodUID]
	}
	return s.pods[r.key]
}

// source keeps the cache of one filter and fetches from the kubelet or the
// API server. At most one goroutine talks to the source at a time (run);
// the records read the cache through an atomic pointer.
type source struct {
	kind         string // SourceKubelet or SourceAPIServer
	node         string
	base         string // the URL without a trailing '/'
	client       *http.Client
	transport    *http.Transport
	token        tokenCache
	ttl, timeout time.Duration
	backoff      time.Duration
	labels       bool
	annotations  bool
	met          *metrics
	log          *zap.Logger
	rl           *ratelog.Logger

	snap atomic.Pointer[snapshot]

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	running     bool          // run is going
	listDone    chan struct{} // closed when run's list ends; nil when none is pending
	listAt      time.Time     // when that list starts
	nextAttempt time.Time
	failures    int
	lastOK      time.Time // the last list that succeeded
	rv          string    // api_server: the resourceVersion to watch from; "" lists first
	wanted      map[string]struct{}
	negative    map[string]time.Time // pods a list did not hold, until when they are not asked for
	closed      bool
}

func newSource(cfg *Config, node string, met *metrics, log *zap.Logger) (*source, error) {
	tc, err := clientTLS(cfg.TLS, log)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: cfg.RequestTimeout.D(), KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: cfg.RequestTimeout.D(),
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	base := cfg.KubeletURL
	if cfg.Source == SourceAPIServer {
		base = cfg.APIServerURL
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &source{
		kind: cfg.Source, node: node, base: strings.TrimRight(base, "/"),
		client: &http.Client{Transport: tr}, transport: tr,
		token: tokenCache{path: cfg.TokenFile},
		ttl:   cfg.CacheTTL.D(), timeout: cfg.RequestTimeout.D(), backoff: cfg.RetryBackoff.D(),
		labels: cfg.Labels, annotations: cfg.Annotations,
		met: met, log: log, rl: ratelog.New(log, 30*time.Second),
		ctx: ctx, cancel: cancel,
		wanted: map[string]struct{}{}, negative: map[string]time.Time{},
	}
	s.snap.Store(&snapshot{pods: map[string]*podInfo{}, byUID: map[string]*podInfo{}})
	return s, nil
}

// clientTLS is the client's TLS configuration for t. The default ca_file
// (the service account's) falls back to the system's roots when it does
// not exist, outside a pod; any other ca_file must exist.
func clientTLS(t conftypes.TLS, log *zap.Logger) (*tls.Config, error) {
	if t.CAFile == DefaultCAFile {
		if _, err := os.Stat(t.CAFile); errors.Is(err, os.ErrNotExist) {
			log.Warn("tls.ca_file, the service account's CA, does not exist; verifying the server with the system's roots", zap.String("ca_file", t.CAFile))
			t.CAFile = ""
		}
	}
	return t.ClientConfig()
}

// close stops a request in flight and waits for it.
func (s *source) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.transport.CloseIdleConnections()
}

// want is called for every chunk with the pods it named that the cache
// does not hold (missing). It starts a refresh when one is due: the cache
// is older than cache_ttl (kubelet), the watch is not running
// (api_server), or a pod is missing that no list left out during the last
// cache_ttl (kubelet). A refresh starts no sooner than the backoff allows;
// one asked for by a missing pod while the source answers, when that time
// is at most request_timeout away, waits for it and then starts.
//
// It returns a channel to wait on, closed when the list in flight ends,
// and the longest the chunk should wait for it, when a missing pod may be
// in that list and the source answered last time; nil when the chunk
// should not wait.
func (s *source) want(missing []string, now time.Time) (<-chan struct{}, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, 0
	}
	asked := false
	for _, k := range missing {
		if until, ok := s.negative[k]; ok {
			if now.Before(until) {
				continue
			}
			delete(s.negative, k)
		}
		asked = true
		if len(s.wanted) < maxWanted {
			s.wanted[k] = struct{}{}
		}
	}
	mayWait := asked && s.failures == 0
	if s.running {
		if mayWait && s.listDone != nil {
			return s.listDone, s.timeout + max(0, s.listAt.Sub(now))
		}
		return nil, 0
	}
	due := false
	switch s.kind {
	case SourceKubelet:
		due = asked || s.lastOK.IsZero() || now.Sub(s.lastOK) >= s.ttl
	case SourceAPIServer:
		due = true // the watch is not running
	}
	// A refresh a missing pod asks for waits for the backoff when that is
	// short; a chunk never waits longer than twice request_timeout.
	if !due || now.Before(s.nextAttempt) && (!mayWait || s.nextAttempt.Sub(now) > s.timeout) {
		return nil, 0
	}
	s.running = true
	s.listAt = now
	if now.Before(s.nextAttempt) {
		s.listAt = s.nextAttempt
	}
	list := s.kind == SourceKubelet || s.rv == ""
	var asking map[string]struct{}
	if list {
		s.listDone = make(chan struct{})
		asking, s.wanted = s.wanted, map[string]struct{}{}
	}
	s.wg.Add(1)
	go s.run(list, asking, s.listAt.Sub(now))
	if mayWait && list {
		return s.listDone, s.timeout + s.listAt.Sub(now)
	}
	return nil, 0
}

// backoffFor is the pause after n failures in a row: retry_backoff
// doubled per failure, at most cache_ttl.
func (s *source) backoffFor(n int) time.Duration {
	d := s.backoff
	for i := 1; i < n && d < s.ttl; i++ {
		d *= 2
	}
	return min(d, s.ttl)
}

// run lists (when list is set), after delay, then, for the API server,
// watches until the watch ends. asking are the pods missing before the
// list started: those it does not hold are not asked for again before
// cache_ttl has passed.
func (s *source) run(list bool, asking map[string]struct{}, delay time.Duration) {
	defer s.wg.Done()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
		}
	}
	started := time.Now()
	if list {
		pods, rv, err := s.list()
		s.mu.Lock()
		done := s.listDone
		s.listDone = nil
		if err != nil {
			s.failed(err)
			s.running = false
			s.mu.Unlock()
			close(done)
			return
		}
		now := time.Now()
		s.apply(pods, now)
		for k := range asking {
			if _, ok := s.snap.Load().pods[k]; !ok {
				s.negative[k] = now.Add(s.ttl)
			}
		}
		if len(s.negative) > maxNegative {
			clear(s.negative) // many unknown pods at once: ask again for all, still at most once per retry_backoff
		}
		s.succeeded(now)
		s.nextAttempt = started.Add(s.backoff)
		s.rv = rv
		if s.kind == SourceKubelet {
			s.running = false
		}
		s.mu.Unlock()
		close(done)
		if s.kind == SourceKubelet {
			return
		}
	}
	err := s.watch()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running = false
	if errors.Is(err, errGone) {
		// Usual after a long pause: the next chunk lists again.
		s.log.Debug("kubernetes metadata: watch expired; listing again", zap.Error(err))
		s.rv = ""
		err = nil
	}
	if err != nil {
		s.failed(err)
		return
	}
	s.nextAttempt = started.Add(s.backoff)
}

// failed records a failed request; s.mu is held.
func (s *source) failed(err error) {
	s.failures++
	s.nextAttempt = time.Now().Add(s.backoffFor(s.failures))
	if s.closed {
		return
	}
	fields := []zap.Field{zap.String("url", s.base), zap.Int("failures_in_a_row", s.failures), zap.Duration("next_attempt_in", s.backoffFor(s.failures)), zap.Error(err)}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) {
		fields = append(fields, zap.String("hint", "the server's certificate does not verify against tls.ca_file (else the system's roots) for tls.server_name (else the URL's host): kubelet serving certificates are often self-signed; set tls.insecure_skip_verify: true, or give the kubelet a certificate the cluster's CA signs (serverTLSBootstrap)"))
	}
	s.rl.Warn("request", "kubernetes metadata: a request to the "+s.kind+" failed; records get the metadata of their file's name until one succeeds", fields...)
}

// succeeded records a list that succeeded; s.mu is held.
func (s *source) succeeded(now time.Time) {
	if s.failures > 0 {
		s.log.Info("kubernetes metadata: the "+s.kind+" answers again", zap.String("url", s.base), zap.Int("failures", s.failures))
	}
	s.failures = 0
	s.lastOK = now
}

// apply makes the listed pods the cache. A pod no longer listed keeps its
// metadata for keepGoneTTLs × cache_ttl.
func (s *source) apply(pods []podJSON, now time.Time) {
	old := s.snap.Load()
	n := &snapshot{gen: old.gen + 1, pods: make(map[string]*podInfo, len(pods)), byUID: make(map[string]*podInfo, len(pods))}
	dropped := 0
	for i := range pods {
		if len(n.pods) >= maxPods {
			dropped++
			continue
		}
		p := newPodInfo(&pods[i], s.labels, s.annotations)
		n.pods[p.key()] = p
		if p.uid != "" {
			n.byUID[p.uid] = p
		}
	}
	if dropped > 0 {
		s.rl.Warn("too_many_pods", "kubernetes metadata: more pods listed than the cache holds; some records get the file-name metadata only", zap.Int("max_pods", maxPods), zap.Int("left_out", dropped))
	}
	for k, p := range old.pods {
		if _, ok := n.pods[k]; ok || len(n.pods) >= maxPods {
			continue
		}
		if p.goneAt.IsZero() {
			q := *p
			q.goneAt = now
			p = &q
		} else if now.Sub(p.goneAt) >= keepGoneTTLs*s.ttl {
			continue
		}
		n.pods[k] = p
		if p.uid != "" {
			if _, taken := n.byUID[p.uid]; !taken {
				n.byUID[p.uid] = p
			}
		}
	}
	s.store(n)
}

// store makes n the cache.
func (s *source) store(n *snapshot) {
	s.snap.Store(n)
	s.met.pods.Set(float64(len(n.pods)))
}

// errGone is a watch whose resourceVersion is too old: list again.
var errGone = errors.New("watch: resource version too old (410 Gone)")

// list fetches the pod list: the kubelet's GET /pods, or the API server's
// pods of this node (resourceVersion=0: from its watch cache, not etcd).
func (s *source) list() ([]podJSON, string, error) {
	u := s.base + "/pods"
	if s.kind == SourceAPIServer {
		q := url.Values{"fieldSelector": {"spec.nodeName=" + s.node}, "resourceVersion": {"0"}}
		u = s.base + "/api/v1/pods?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	resp, err := s.do(ctx, u)
	if err != nil {
		return nil, "", s.count(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	if err == nil && len(data) > maxListBytes {
		err = fmt.Errorf("pod list larger than %d bytes", maxListBytes)
	}
	if err != nil {
		return nil, "", s.count(fmt.Errorf("GET %s: %w", u, err))
	}
	var pl podListJSON
	if err := json.Unmarshal(data, &pl); err != nil {
		return nil, "", s.count(fmt.Errorf("GET %s: %w", u, err))
	}
	if pl.Kind != "PodList" {
		return nil, "", s.count(fmt.Errorf("GET %s: the answer is not a PodList (kind %q)", u, pl.Kind))
	}
	_ = s.count(nil)
	return pl.Items, pl.Metadata.ResourceVersion, nil
}

// watch follows the API server's changes to this node's pods from s.rv
// until the server ends the watch (after cache_ttl), applying each.
func (s *source) watch() error {
	s.mu.Lock()
	rv := s.rv
	s.mu.Unlock()
	q := url.Values{
		"watch": {"1"}, "fieldSelector": {"spec.nodeName=" + s.node}, "resourceVersion": {rv},
		"allowWatchBookmarks": {"true"}, "timeoutSeconds": {strconv.Itoa(max(1, int(s.ttl/time.Second)))},
	}
	u := s.base + "/api/v1/pods?" + q.Encode()
	ctx, cancel := context.WithTimeout(s.ctx, s.ttl+s.timeout)
	defer cancel()
	// Only the answer's head must come within request_timeout.
	head := time.AfterFunc(s.timeout, cancel)
	resp, err := s.do(ctx, u)
	if !head.Stop() {
		if err == nil {
			resp.Body.Close()
			err = context.Canceled
		}
		if s.ctx.Err() == nil {
			err = fmt.Errorf("watch: no answer within %v: %w", s.timeout, context.DeadlineExceeded)
		}
	}
	if err != nil {
		_ = s.count(err)
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusGone {
			return errGone
		}
		return err
	}
	defer resp.Body.Close()
	_ = s.count(nil)
	lr := &eventLimitReader{r: resp.Body}
	dec := json.NewDecoder(lr)
	for {
		lr.n = 0
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil && s.ctx.Err() == nil {
				return nil // the watch ended; the next chunk starts another
			}
			return fmt.Errorf("watch: %w", err)
		}
		if err := s.event(ev.Type, ev.Object); err != nil {
			return err
		}
	}
}

// event applies one watch event.
func (s *source) event(typ string, obj []byte) error {
	if typ == "ERROR" {
		var st struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(obj, &st)
		if st.Code == http.StatusGone {
			return errGone
		}
		return fmt.Errorf("watch: error event %d: %s", st.Code, st.Message)
	}
	var pj podJSON
	if err := json.Unmarshal(obj, &pj); err != nil {
		return fmt.Errorf("watch: %s event: %w", typ, err)
	}
	if rv := pj.Metadata.ResourceVersion; rv != "" {
		s.mu.Lock()
		s.rv = rv
		s.mu.Unlock()
	}
	if typ != "ADDED" && typ != "MODIFIED" && typ != "DELETED" {
		return nil // BOOKMARK
	}
	old := s.snap.Load()
	n := &snapshot{gen: old.gen + 1, pods: make(map[string]*podInfo, len(old.pods)+1), byUID: make(map[string]*podInfo, len(old.byUID)+1)}
	now := time.Now()
	for k, p := range old.pods {
		if !p.goneAt.IsZero() && now.Sub(p.goneAt) >= keepGoneTTLs*s.ttl {
			continue
		}
		n.pods[k] = p
		if p.uid != "" {
			n.byUID[p.uid] = p
		}
	}
	p := newPodInfo(&pj, s.labels, s.annotations)
	if typ == "DELETED" {
		p.goneAt = now
	}
	if _, known := n.pods[p.key()]; !known && len(n.pods) >= maxPods {
		return nil
	}
	n.pods[p.key()] = p
	if p.uid != "" {
		n.byUID[p.uid] = p
	}
	s.store(n)
	return nil
}

// do sends a GET with the token and checks the status.
func (s *source) do(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "logship")
	if tok := s.token.get(s.rl); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			s.token.expire() // a rotated token: read it again
		}
		return nil, &statusError{code: resp.StatusCode, msg: string(bytes.TrimSpace(msg))}
	}
	return resp, nil
}

type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.code, http.StatusText(e.code), e.msg)
}

// count counts a request's result and returns err.
func (s *source) count(err error) error {
	var se *statusError
	var ne net.Error
	switch {
	case err == nil:
		s.met.requests("ok").Inc()
	case errors.As(err, &se) && (se.code == http.StatusUnauthorized || se.code == http.StatusForbidden):
		s.met.requests("unauthorized").Inc()
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		s.met.requests("timeout").Inc()
	default:
		s.met.requests("error").Inc()
	}
	return err
}

// eventLimitReader fails once one watch event has taken more than
// maxEventBytes (n is reset before each).
type eventLimitReader struct {
	r io.Reader
	n int
}

func (l *eventLimitReader) Read(p []byte) (int, error) {
	if l.n > maxEventBytes {
		return 0, fmt.Errorf("watch event larger than %d bytes", maxEventBytes)
	}
	n, err := l.r.Read(p)
	l.n += n
	return n, err
}

// tokenCache reads the bearer token file at most once per tokenReread,
// and at once after a 401.
type tokenCache struct {
	path string
	mu   sync.Mutex
	tok  string
	read time.Time
}

func (t *tokenCache) get(rl *ratelog.Logger) string {
	if t.path == "" {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if !t.read.IsZero() && now.Sub(t.read) < tokenReread {
		return t.tok
	}
	b, err := os.ReadFile(t.path)
	t.read = now
	if err != nil {
		if t.tok == "" || !errors.Is(err, os.ErrNotExist) {
			rl.Warn("token", "kubernetes metadata: cannot read token_file; requests go without a token", zap.String("token_file", t.path), zap.Error(err))
		}
		t.tok = ""
		return ""
	}
	t.tok = string(bytes.TrimSpace(b))
	return t.tok
}

func (t *tokenCache) expire() {
	t.mu.Lock()
	t.read = time.Time{}
	t.mu.Unlock()
}
