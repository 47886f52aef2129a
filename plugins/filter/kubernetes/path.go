package kubernetes

import "strings"

// fileMeta is what a container log file's name says.
type fileMeta struct {
	Namespace, Pod, Container string
	ContainerID               string // /var/log/containers names only
	PodUID                    string // /var/log/pods names only
	Restart                   int    // /var/log/pods: the N of N.log; -1 otherwise
}

// key is the pod's cache key.
func (m *fileMeta) key() string { return m.Namespace + "/" + m.Pod }

// parsePath reads the metadata from a container log file's path, in one
// of the two layouts the kubelet writes:
//
//	DIR/<pod>_<namespace>_<container>-<64 hex container id>.log   (/var/log/containers, symbolic links)
//	DIR/<namespace>_<pod>_<uid>/<container>/<N>.log               (/var/log/pods, the files)
//
// The directory above is not looked at. ok is false for any other path.
func parsePath(p string) (m fileMeta, ok bool) {
	base := p
	dir := ""
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		base, dir = p[i+1:], p[:i]
	}
	if m, ok = parseContainersName(base); ok {
		return m, true
	}
	// /var/log/pods: DIR/<ns>_<pod>_<uid>/<container>/<N>.log
	n, ok := strings.CutSuffix(base, ".log")
	if !ok || !isDigits(n) || len(n) > 6 {
		return fileMeta{}, false
	}
	i := strings.LastIndexByte(dir, '/')
	if i < 0 {
		return fileMeta{}, false
	}
	container, podDir := dir[i+1:], dir[:i]
	if j := strings.LastIndexByte(podDir, '/'); j >= 0 {
		podDir = podDir[j+1:]
	}
	if m, ok = parsePodDir(podDir, container); !ok {
		return fileMeta{}, false
	}
	m.Restart = atoi(n)
	return m, true
}

// parseContainersName reads <pod>_<namespace>_<container>-<id>.log, from
// the right: the id is 64 hex digits, the container name and the
// namespace are DNS labels (no '_', no '.'), and the pod's name (a DNS
// subdomain: it may hold '.' and '-') is what is left.
func parseContainersName(base string) (fileMeta, bool) {
	s, ok := strings.CutSuffix(base, ".log")
	if !ok || len(s) < 65 || s[len(s)-65] != '-' {
		return fileMeta{}, false
	}
	id := s[len(s)-64:]
	if !isHex(id) {
		return fileMeta{}, false
	}
	s = s[:len(s)-65]
	i := strings.LastIndexByte(s, '_')
	if i < 0 {
		return fileMeta{}, false
	}
	container := s[i+1:]
	s = s[:i]
	j := strings.LastIndexByte(s, '_')
	if j < 0 {
		return fileMeta{}, false
	}
	ns, pod := s[j+1:], s[:j]
	if !isDNSLabel(container) || !isDNSLabel(ns) || !isDNSSubdomain(pod) {
		return fileMeta{}, false
	}
	return fileMeta{Namespace: ns, Pod: pod, Container: container, ContainerID: id, Restart: -1}, true
}

// parsePodDir reads <namespace>_<pod>_<uid> (a /var/log/pods directory).
func parsePodDir(dir, container string) (fileMeta, bool) {
	i := strings.IndexByte(dir, '_')
	j := strings.LastIndexByte(dir, '_')
	if i < 0 || j <= i {
		return fileMeta{}, false
	}
	ns, pod, uid := dir[:i], dir[i+1:j], dir[j+1:]
	if !isDNSLabel(ns) || !isDNSSubdomain(pod) || !isDNSLabel(container) || !isUID(uid) {
		return fileMeta{}, false
	}
	return fileMeta{Namespace: ns, Pod: pod, Container: container, PodUID: uid}, true
}

// parseTag reads the metadata from a tag that names a container log file
// as the tail input's tag kube.* does (kube.var.log.containers.<name>.log,
// kube.var.log.pods.<ns>_<pod>_<uid>.<container>.<N>.log: '/' became
// '.'). A /var/log/containers name must follow a "containers" part of the
// tag, since a pod's name may hold dots too.
func parseTag(tag string) (fileMeta, bool) {
	under := strings.IndexByte(tag, '_')
	if under < 0 {
		return fileMeta{}, false
	}
	head := tag[:under] // ...containers.<pod> or ...pods.<ns>
	if i := strings.LastIndex(head, "containers."); i >= 0 && (i == 0 || head[i-1] == '.') {
		if m, ok := parseContainersName(tag[i+len("containers."):]); ok {
			return m, true
		}
	}
	// pods.<ns>_<pod>_<uid>.<container>.<N>.log: the namespace and the
	// container hold no dots.
	i := strings.LastIndexByte(head, '.')
	if i < 0 || !strings.HasSuffix(head[:i], "pods") || (i > 4 && head[i-5] != '.') {
		return fileMeta{}, false
	}
	rest, ok := strings.CutSuffix(tag[i+1:], ".log")
	if !ok {
		return fileMeta{}, false
	}
	k := strings.LastIndexByte(rest, '.')
	if k < 0 || !isDigits(rest[k+1:]) || len(rest)-k-1 > 6 {
		return fileMeta{}, false
	}
	n := rest[k+1:]
	rest = rest[:k]
	k = strings.LastIndexByte(rest, '.')
	if k < 0 {
		return fileMeta{}, false
	}
	m, ok := parsePodDir(rest[:k], rest[k+1:])
	if !ok {
		return fileMeta{}, false
	}
	m.Restart = atoi(n)
	return m, true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	return n
}

// isDNSLabel: what namespaces and container names are (RFC 1123 label).
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// isDNSSubdomain: what pod names are (RFC 1123 subdomain).
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return isDNSLabel(s)
		}
		if !isDNSLabel(s[:i]) {
			return false
		}
		s = s[i+1:]
	}
}

// isUID: a pod's uid, a UUID, or the 32 hex digits of a static pod's.
func isUID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && c != '-' {
			return false
		}
	}
	return true
}
