package kubernetes

import (
	"errors"
	"net/url"
	"regexp"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

// The sources of pod metadata.
const (
	SourceKubelet   = "kubelet"
	SourceAPIServer = "api_server"
	SourceNone      = "none"
)

// The in-cluster service account's files.
const (
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// Config is the kubernetes filter's configuration.
type Config struct {
	// Source is where labels, annotations, the pod's uid and the container
	// image come from: kubelet (this node's kubelet, GET /pods: no load on
	// the API server), api_server (the pods of this node only, listed and
	// then watched) or none (what the log file's name says, nothing more).
	Source string `yaml:"source"`
	// KubeletURL is the kubelet's HTTPS endpoint (source: kubelet). In a
	// DaemonSet, set it to https://$(NODE_IP):10250 with NODE_IP from the
	// downward API (status.hostIP).
	KubeletURL string `yaml:"kubelet_url"`
	// APIServerURL is the Kubernetes API server (source: api_server).
	APIServerURL string `yaml:"api_server_url"`
	// TokenFile holds the bearer token sent with every request (the pod's
	// service account token). It is read again every minute, and at once
	// after a 401, since projected tokens rotate. A missing file means no
	// token is sent.
	TokenFile string `yaml:"token_file"`
	// TLS verifies the server and may present a client certificate.
	// ca_file is the PEM bundle that verifies the server's certificate
	// (default: the service account's ca.crt; when that default file does
	// not exist the system's roots are used, while a ca_file set to any
	// other path must exist; "" takes the system's roots). Kubelet serving
	// certificates are often self-signed (unless the cluster runs the
	// kubelet with serverTLSBootstrap): set insecure_skip_verify for such a
	// kubelet, or the requests fail and records carry the file-name
	// metadata only (logship_kubernetes_requests_total{result="error"}
	// says so). server_name is the name verified instead of the URL's host.
	// cert_file and key_file present a client certificate: the kubelet and
	// the API server accept x509 client authentication (one their client
	// CA signed), for clusters where the kubelet's token authentication is
	// off.
	TLS conftypes.TLS `yaml:"tls"`
	// NodeName is the node whose pods are watched (source: api_server) and
	// the host field of the metadata. "" takes service.node_name (the
	// NODE_NAME environment variable or the hostname).
	NodeName string `yaml:"node_name"`
	// Key is the record field the metadata map is added under. A record
	// that already has this field is passed unchanged.
	Key string `yaml:"key"`
	// PathKey is the record field holding the log file's path (the tail
	// input's path_key). A record without it is looked up by its tag: the
	// tail input's tag kube.* names the file (kube.var.log.containers.F).
	PathKey string `yaml:"path_key"`
	// Labels adds the pod's labels (labels: {...}).
	Labels bool `yaml:"labels"`
	// Annotations adds the pod's annotations (annotations: {...}), except
	// kubectl.kubernetes.io/last-applied-configuration, a copy of the
	// whole manifest.
	Annotations bool `yaml:"annotations"`
	// CacheTTL is how old the pod list may get: records arriving later
	// make it be fetched again (source: kubelet; source: api_server
	// watches, and this bounds one watch request). A pod the source did
	// not list is not asked for again before it has passed. Between 1s and
	// 24h.
	CacheTTL conftypes.Duration `yaml:"cache_ttl"`
	// RequestTimeout bounds one request (for a watch: until its answer
	// begins); a chunk of a pod the cache does not know yet waits for the
	// list that may bring it at most twice this long, and only while the
	// source answers. Between 10ms and 1m.
	RequestTimeout conftypes.Duration `yaml:"request_timeout"`
	// RetryBackoff is the least time between two requests, and the first
	// pause after a failed one; the pause doubles with every failure up to
	// cache_ttl. Between 10ms and 1h, and at most cache_ttl.
	RetryBackoff conftypes.Duration `yaml:"retry_backoff"`
}

func defaultConfig() *Config {
	return &Config{
		Source:         SourceKubelet,
		KubeletURL:     "https://127.0.0.1:10250",
		APIServerURL:   "https://kubernetes.default.svc",
		TokenFile:      DefaultTokenFile,
		TLS:            conftypes.TLS{CAFile: DefaultCAFile},
		Key:            "kubernetes",
		PathKey:        "file",
		Labels:         true,
		Annotations:    true,
		CacheTTL:       conftypes.Duration(time.Minute),
		RequestTimeout: conftypes.Duration(5 * time.Second),
		RetryBackoff:   conftypes.Duration(time.Second),
	}
}

// The bounds of the durations: far beyond any sensible setting, so that a
// typo (a missing unit, an extra zero) is an error.
const (
	minCacheTTL       = time.Second
	maxCacheTTL       = 24 * time.Hour
	minRequestTimeout = 10 * time.Millisecond
	maxRequestTimeout = time.Minute
	minRetryBackoff   = 10 * time.Millisecond
	maxRetryBackoff   = time.Hour
)

// nodeNameRe is a DNS subdomain, what a node's name is.
var nodeNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	switch c.Source {
	case SourceKubelet:
		checkURL(&errs, "kubelet_url", c.KubeletURL)
	case SourceAPIServer:
		checkURL(&errs, "api_server_url", c.APIServerURL)
	case SourceNone:
	default:
		errs = append(errs, pipeline.FieldErr("source", "%q is not one of kubelet, api_server, none", c.Source))
	}
	if c.NodeName != "" && !nodeNameRe.MatchString(c.NodeName) {
		errs = append(errs, pipeline.FieldErr("node_name", "%q is not a node name (lowercase letters, digits, '-', '.')", c.NodeName))
	}
	if c.Key == "" {
		errs = append(errs, pipeline.FieldErr("key", "must not be empty"))
	}
	switch c.PathKey {
	case "":
		errs = append(errs, pipeline.FieldErr("path_key", "must not be empty"))
	case c.Key:
		errs = append(errs, pipeline.FieldErr("path_key", "must differ from key (%q)", c.Key))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, pipeline.FieldErr("tls", "cert_file and key_file go together"))
	}
	durationIn(&errs, "cache_ttl", c.CacheTTL, minCacheTTL, maxCacheTTL)
	durationIn(&errs, "request_timeout", c.RequestTimeout, minRequestTimeout, maxRequestTimeout)
	if durationIn(&errs, "retry_backoff", c.RetryBackoff, minRetryBackoff, maxRetryBackoff) && c.RetryBackoff > c.CacheTTL {
		errs = append(errs, pipeline.FieldErr("retry_backoff", "must be at most cache_ttl (%v)", c.CacheTTL))
	}
	return errors.Join(errs...)
}

func checkURL(errs *[]error, field, s string) {
	u, err := url.Parse(s)
	switch {
	case s == "":
		*errs = append(*errs, pipeline.FieldErr(field, "must not be empty"))
	case err != nil:
		*errs = append(*errs, pipeline.FieldErr(field, "%v", err))
	case u.Scheme != "https" && u.Scheme != "http" || u.Host == "":
		*errs = append(*errs, pipeline.FieldErr(field, "%q is not an http(s)://host[:port] URL", s))
	case u.RawQuery != "" || u.Fragment != "":
		*errs = append(*errs, pipeline.FieldErr(field, "%q must not have a query or fragment", s))
	}
}

// durationIn checks lo <= d <= hi and reports whether it holds.
func durationIn(errs *[]error, field string, d conftypes.Duration, lo, hi time.Duration) bool {
	switch {
	case d.D() < lo:
		*errs = append(*errs, pipeline.FieldErr(field, "must be at least %v", lo))
	case d.D() > hi:
		*errs = append(*errs, pipeline.FieldErr(field, "must be at most %v", hi))
	default:
		return true
	}
	return false
}
