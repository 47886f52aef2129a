#!/usr/bin/env bash
# The main job on one machine, nothing else installed: an agent tails a log
# that grows while it runs and listens for forward clients, and ships
# everything to an aggregator that writes one file per tag.
#
#   app.log (grows) --tail--> agent :24224 (forward in) --forward--> aggregator :24225 --> demo/out/<tag>.log
#
# `make run` calls it. Ctrl-C stops everything (agent first, so that it
# hands what it holds to the aggregator). DEMO_SECONDS=N stops by itself
# after N seconds; DEMO_DIR moves the working directory (default ./demo).
# The ports are fixed: 24224 and 2020 (agent), 24225 and 2021 (aggregator).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-bin/logship}
DEMO=${DEMO_DIR:-./demo}
SECONDS_TO_RUN=${DEMO_SECONDS:-0}

if [[ ! -x $BIN ]]; then
	echo "run-demo: $BIN is missing; run make build (or make run)" >&2
	exit 1
fi

mkdir -p "$DEMO/logs" "$DEMO/out"
DEMO=$(cd "$DEMO" && pwd)
echo '*' >"$DEMO/.gitignore" # all of it is generated

cat >"$DEMO/aggregator.yaml" <<YAML
# Written by scripts/run-demo.sh: the central tier of the demo.
service:
  data_dir: $DEMO/aggregator-data
  http_listen: 127.0.0.1:2021
  shutdown_timeout: 10s
buffer:
  partitions: 2
  max_bytes: 256MiB
  segment_bytes: 16MiB
inputs:
  - type: forward
    name: agents
    listen: 127.0.0.1:24225
outputs:
  - type: file
    name: per-tag
    match: "**"
    path: $DEMO/out/{tag}.log
    tag_key: tag
    time_key: time
YAML

cat >"$DEMO/agent.yaml" <<YAML
# Written by scripts/run-demo.sh: the agent of the demo host.
service:
  data_dir: $DEMO/agent-data
  http_listen: 127.0.0.1:2020
  shutdown_timeout: 10s
buffer:
  partitions: 2
  max_bytes: 256MiB
  segment_bytes: 16MiB
inputs:
  - type: tail
    name: app
    tag: demo.app
    paths: [$DEMO/logs/app.log]
    read_from_head: true
  - type: forward
    name: clients
    listen: 127.0.0.1:24224
outputs:
  - type: forward
    name: aggregator
    match: "**"
    servers: [127.0.0.1:24225]
    require_ack: true
YAML

"$BIN" validate -c "$DEMO/aggregator.yaml" --role aggregator >/dev/null
"$BIN" validate -c "$DEMO/agent.yaml" --role agent >/dev/null

pids=()
sleeper=""
stopping=0
stop() {
	((stopping)) && return
	stopping=1
	trap - INT TERM EXIT
	echo
	echo "run-demo: stopping"
	# writers, then the agent (it hands what it holds to the aggregator),
	# then the aggregator
	for p in "${pids[@]:2}" ${sleeper:-}; do kill "$p" 2>/dev/null || true; done
	if [[ -n ${pids[1]:-} ]]; then kill -TERM "${pids[1]}" 2>/dev/null || true; wait "${pids[1]}" 2>/dev/null || true; fi
	if [[ -n ${pids[0]:-} ]]; then kill -TERM "${pids[0]}" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true; fi
	wait 2>/dev/null || true
	counts
	echo "run-demo: stopped; the buffers stay in $DEMO/*-data (rm -rf $DEMO to start over)"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# waitport PORT: until something listens on 127.0.0.1:PORT (bash's
# /dev/tcp: nothing else needed), at most 10 s.
waitport() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "run-demo: nothing listens on 127.0.0.1:$1; see $DEMO/*.log" >&2
	return 1
}

counts() {
	local f line=""
	shopt -s nullglob
	for f in "$DEMO"/out/*.log; do
		line+="  $(basename "$f"): $(wc -l <"$f")"
	done
	shopt -u nullglob
	echo "[$(date +%T)] events per file in $DEMO/out:${line:- (none yet)}"
}

# In sessions of their own, so that Ctrl-C (SIGINT to the terminal's
# process group) reaches only this script, which stops them in order.
setsid "$BIN" aggregator -c "$DEMO/aggregator.yaml" >"$DEMO/aggregator.log" 2>&1 &
pids+=($!)
waitport 24225
setsid "$BIN" agent -c "$DEMO/agent.yaml" >"$DEMO/agent.log" 2>&1 &
pids+=($!)
waitport 24224

# The application: a log that grows, a few lines a second.
(
	paths=(/api/orders /api/users /healthz /api/cart /login)
	codes=(200 200 200 201 404 500)
	i=0
	while :; do
		i=$((i + 1))
		echo "$(date -u +%FT%TZ) INFO request=$i path=${paths[RANDOM % 5]} status=${codes[RANDOM % 6]} ms=$((RANDOM % 300))" >>"$DEMO/logs/app.log"
		sleep 0.$((2 + RANDOM % 5))
	done
) &
pids+=($!)

# A forward client: one event every 2 s, sent the way the hint below says.
(
	i=0
	while :; do
		i=$((i + 1))
		echo "[\"demo.orders\",$(date +%s),{\"order\":$i,\"amount\":$((RANDOM % 100)),\"currency\":\"EUR\"}]" >/dev/tcp/127.0.0.1/24224 2>/dev/null || true
		sleep 2
	done
) &
pids+=($!)

cat <<MSG

logship demo: agent (tail + forward :24224) -> aggregator (:24225) -> one file per tag
  growing log:   $DEMO/logs/app.log       (tag demo.app)
  output files:  $DEMO/out/<tag>.log      e.g. tail -f $DEMO/out/demo.app.log
  process logs:  $DEMO/agent.log  $DEMO/aggregator.log
  metrics:       curl -s 127.0.0.1:2020/metrics | grep records_  (agent; aggregator on :2021)
  buffers:       $BIN buffer inspect -d $DEMO/agent-data

Send your own events:
  a forward event, bash only (JSON framing of the forward protocol; a tag of your choice):
    echo '["my.tag",'\$(date +%s)',{"message":"hello"}]' > /dev/tcp/127.0.0.1/24224
  or a line in the tailed log:
    echo "my own line" >> $DEMO/logs/app.log
  -> $DEMO/out/my.tag.log and $DEMO/out/demo.app.log
  (fluent-logger, Fluent Bit and fluentd clients work too: forward to 127.0.0.1:24224)

Ctrl-C stops everything.
MSG

start=$(date +%s)
while :; do
	sleep 5 &
	sleeper=$!
	wait "$sleeper" || true # a signal's trap runs at once
	((stopping)) && break
	for p in "${pids[@]:0:2}"; do
		if ! kill -0 "$p" 2>/dev/null; then
			echo "run-demo: a logship process exited; see $DEMO/agent.log and $DEMO/aggregator.log" >&2
			exit 1
		fi
	done
	counts
	if ((SECONDS_TO_RUN > 0 && $(date +%s) - start >= SECONDS_TO_RUN)); then
		break
	fi
done
