package kubernetes

import (
	"sort"
	"strings"
	"time"

	"github.com/logship/logship/internal/mpack"
)

// The few fields of a v1 Pod, PodList and watch event the filter reads;
// encoding/json skips the rest (managedFields, the spec's volumes, ...).
type podListJSON struct {
	Kind     string `json:"kind"`
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []podJSON `json:"items"`
}

type podJSON struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		UID             string            `json:"uid"`
		ResourceVersion string            `json:"resourceVersion"`
		Labels          map[string]string `json:"labels"`
		Annotations     map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		NodeName            string          `json:"nodeName"`
		Containers          []containerJSON `json:"containers"`
		InitContainers      []containerJSON `json:"initContainers"`
		EphemeralContainers []containerJSON `json:"ephemeralContainers"`
	} `json:"spec"`
	Status struct {
		ContainerStatuses          []containerStatusJSON `json:"containerStatuses"`
		InitContainerStatuses      []containerStatusJSON `json:"initContainerStatuses"`
		EphemeralContainerStatuses []containerStatusJSON `json:"ephemeralContainerStatuses"`
	} `json:"status"`
}

type containerJSON struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

type containerStatusJSON struct {
	Name         string `json:"name"`
	Image        string `json:"image"`
	ImageID      string `json:"imageID"`
	ContainerID  string `json:"containerID"`
	RestartCount int    `json:"restartCount"`
	LastState    struct {
		Terminated *struct {
			ContainerID string `json:"containerID"`
		} `json:"terminated"`
	} `json:"lastState"`
}

// lastAppliedConfig is the annotation kubectl apply writes: a copy of the
// whole manifest, of no use on every log line.
const lastAppliedConfig = "kubectl.kubernetes.io/last-applied-configuration"

// podInfo is one cached pod, with its labels and annotations already
// encoded as msgpack maps (nil: none, or not wanted).
type podInfo struct {
	name, namespace, uid, node string
	labels, annotations        []byte
	containers                 map[string]containerInfo
	goneAt                     time.Time // when the source stopped listing it; zero while listed
}

type containerInfo struct {
	image, imageID string
	id, lastID     string // the running container's id, the one before (a restart)
	restarts       int
}

func (p *podInfo) key() string { return p.namespace + "/" + p.name }

// newPodInfo keeps what the records need of a pod.
func newPodInfo(pj *podJSON, labels, annotations bool) *podInfo {
	md := &pj.Metadata
	p := &podInfo{name: md.Name, namespace: md.Namespace, uid: md.UID, node: pj.Spec.NodeName}
	if labels {
		p.labels = encodeStringMap(md.Labels, "")
	}
	if annotations {
		p.annotations = encodeStringMap(md.Annotations, lastAppliedConfig)
	}
	p.containers = map[string]containerInfo{}
	for _, list := range [][]containerJSON{pj.Spec.Containers, pj.Spec.InitContainers, pj.Spec.EphemeralContainers} {
		for _, c := range list {
			p.containers[c.Name] = containerInfo{image: c.Image}
		}
	}
	for _, list := range [][]containerStatusJSON{pj.Status.ContainerStatuses, pj.Status.InitContainerStatuses, pj.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			ci := containerInfo{image: cs.Image, imageID: cs.ImageID, id: stripRuntime(cs.ContainerID), restarts: cs.RestartCount}
			if ci.image == "" {
				ci.image = p.containers[cs.Name].image
			}
			if t := cs.LastState.Terminated; t != nil {
				ci.lastID = stripRuntime(t.ContainerID)
			}
			p.containers[cs.Name] = ci
		}
	}
	return p
}

// stripRuntime turns containerd://ID (or docker://, cri-o://) into ID.
func stripRuntime(id string) string {
	if i := strings.Index(id, "://"); i >= 0 {
		return id[i+3:]
	}
	return id
}

// encodeStringMap encodes m as a msgpack map with sorted keys (nil when
// empty), leaving out the key skip.
func encodeStringMap(m map[string]string, skip string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != skip {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	b := mpack.AppendMapHeader(nil, len(keys))
	for _, k := range keys {
		b = mpack.AppendString(b, k)
		b = mpack.AppendString(b, m[k])
	}
	return b
}

// The fields of the metadata map: the names Fluent Bit's and fluentd's
// kubernetes filters use, so that queries keep working.
var (
	fPodName        = mpack.AppendString(nil, "pod_name")
	fNamespace      = mpack.AppendString(nil, "namespace_name")
	fPodID          = mpack.AppendString(nil, "pod_id")
	fHost           = mpack.AppendString(nil, "host")
	fContainerName  = mpack.AppendString(nil, "container_name")
	fContainerID    = mpack.AppendString(nil, "container_id")
	fDockerID       = mpack.AppendString(nil, "docker_id")
	fContainerHash  = mpack.AppendString(nil, "container_hash")
	fContainerImage = mpack.AppendString(nil, "container_image")
	fLabels         = mpack.AppendString(nil, "labels")
	fAnnotations    = mpack.AppendString(nil, "annotations")
)

// encodeMeta appends the metadata map of a record from file m, of pod p
// (nil when the cache does not know it), on node host.
func encodeMeta(dst []byte, m *fileMeta, p *podInfo, host string) []byte {
	var ci containerInfo
	uid := m.PodUID
	containerID := m.ContainerID
	if p != nil {
		ci = p.containers[m.Container]
		if uid == "" {
			uid = p.uid
		}
		if p.node != "" {
			host = p.node
		}
		if containerID == "" && m.Restart >= 0 {
			// /var/log/pods/.../N.log: N is the restart count of the
			// container that writes it.
			switch m.Restart {
			case ci.restarts:
				containerID = ci.id
			case ci.restarts - 1:
				containerID = ci.lastID
			}
		}
	}
	type kv struct {
		k []byte
		v string
	}
	fields := [...]kv{
		{fPodName, m.Pod}, {fNamespace, m.Namespace}, {fPodID, uid}, {fHost, host},
		{fContainerName, m.Container}, {fContainerID, containerID}, {fDockerID, containerID},
		{fContainerHash, ci.imageID}, {fContainerImage, ci.image},
	}
	n := 0
	for _, f := range fields {
		if f.v != "" {
			n++
		}
	}
	if p != nil && p.labels != nil {
		n++
	}
	if p != nil && p.annotations != nil {
		n++
	}
	dst = mpack.AppendMapHeader(dst, n)
	for _, f := range fields {
		if f.v != "" {
			dst = append(dst, f.k...)
			dst = mpack.AppendString(dst, f.v)
		}
	}
	if p != nil && p.labels != nil {
		dst = append(append(dst, fLabels...), p.labels...)
	}
	if p != nil && p.annotations != nil {
		dst = append(append(dst, fAnnotations...), p.annotations...)
	}
	return dst
}
