// Package kubernetes is the kubernetes filter: it adds a pod's metadata to
// the records read from its container log files.
//
//	inputs:
//	  - type: tail
//	    tag: kube.*
//	    paths: [/var/log/containers/*.log]
//	    format: cri
//	    path_key: file
//	filters:
//	  - type: kubernetes
//	    match: "kube.**"
//	    source: kubelet                      # kubelet | api_server | none
//	    kubelet_url: https://${NODE_IP}:10250
//
// # What a record gets
//
// A record whose path_key field (else its tag) names a container log
// file gets, under key (default kubernetes), a map with the names Fluent
// Bit's and fluentd's kubernetes filters use:
//
//	pod_name, namespace_name, container_name   from the file's name
//	container_id, docker_id                    the same id: from the file's name (/var/log/containers),
//	                                           or the pod's status (/var/log/pods/.../N.log, N the restart count)
//	pod_id                                     the pod's uid (from /var/log/pods names, or the source)
//	host                                       the pod's node (else node_name)
//	container_image, container_hash            the container's image and image id, from the source
//	labels, annotations                        the pod's, from the source (labels: false, annotations: false turn them off)
//
// Fields that are not known are left out. The file names read are the
// kubelet's two layouts, whatever the directory above:
// <pod>_<namespace>_<container>-<64 hex id>.log (the /var/log/containers
// symbolic links) and <namespace>_<pod>_<uid>/<container>/<N>.log (the
// /var/log/pods files). A record naming no such file passes unchanged, as
// does a record that is not a map or that has the key already; a chunk
// whose records none changed is not copied.
//
// # Sources and the cache
//
// source: kubelet (the default) asks this node's kubelet for its pods
// (GET /pods, a v1 PodList, with the service account's token): no load on
// the API server however many nodes there are (Fluent Bit #1948). The
// service account needs get on nodes/proxy. source: api_server lists the
// pods of this node (fieldSelector spec.nodeName, resourceVersion=0: from
// the API server's watch cache, not etcd) and then watches them, from the
// list's resourceVersion, one watch request of cache_ttl at a time; it
// needs get, list and watch on pods. source: none makes no request: the
// file-name fields only.
//
// The pods are cached, labels and annotations already encoded; records
// read the cache without a lock, and a path's metadata map is encoded once
// per change of the cache. Requests are made by one goroutine at a time,
// started by the records themselves (a filter has no Start or Stop), so a
// filter that a reload drops leaves nothing running for longer than one
// request:
//
//   - kubelet: the pod list is fetched again when records come and it is
//     older than cache_ttl, or when a record names a pod it does not hold
//     that the last list did not leave out (a pod a list did not hold is
//     not asked for again for cache_ttl: an old file of a long-gone pod
//     costs nothing).
//   - api_server: the watch keeps the cache current while records come;
//     when it ends (after cache_ttl) the next chunk starts another, from
//     where the last left off; a 410 Gone lists again.
//   - Two requests are at least retry_backoff apart; after a failure the
//     pause doubles, up to cache_ttl. However many records of an unknown
//     pod arrive, at most one request is made per pause.
//   - A pod no longer listed (deleted) keeps its metadata for 5 × cache_ttl:
//     its last lines are still being read.
//
// # Waiting, and degrading
//
// A chunk naming a pod the cache does not hold waits for the list that
// may bring it (and for one more when the list in flight was sent before
// the pod started), twice request_timeout at most, but only while the
// source answers: a new pod's first lines then carry its labels like the
// rest. This is a choice against the alternative of never waiting: the
// kubelet on the same node answers in milliseconds, and without the wait
// the first chunk of every new pod (often its most telling lines: the
// start-up and the crash) would go without labels. Once a request has failed,
// no chunk waits: records get what the cache knows (the file-name fields
// at least) until the source answers again, and later records get the
// metadata that arrives later. Failures (errors, 401 and 403, timeouts,
// an answer that is not a PodList) are counted in
// logship_kubernetes_requests_total{result} and logged at most every 30s;
// logship_kubernetes_records_total{metadata} says how many records got
// full metadata and how many the file-name fields only.
//
// # Limits
//
// A pod list may be 64MiB, a watch event 16MiB; the cache holds 10,000
// pods. The token file is read again every minute and after a 401
// (projected tokens rotate). Entries are walked once, top-level keys
// compared and values skipped without decoding.
package kubernetes
