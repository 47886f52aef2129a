#!/usr/bin/env bash
# Installs the optional third-party peers the e2e and conformance tests use:
#   - npm: @fluent-org/logger and fluent-logger (forward clients; the
#     former also has a FluentServer) into test/peers/node_modules
#   - Debian: python3-fluent-logger (forward client)
#   - Debian: kcat (kafkacat before bookworm) and python3-confluent-kafka
#     (librdkafka), the outside Kafka clients of test/e2e/kafka_test.go
# Each step is best effort: a test whose peer is missing prints SKIP.
set -u
cd "$(dirname "$0")/.."
status=0

if command -v npm >/dev/null 2>&1; then
	if [ ! -d test/peers/node_modules/@fluent-org/logger ] || [ ! -d test/peers/node_modules/fluent-logger ]; then
		echo "peers: installing npm forward clients"
		(cd test/peers && npm install --no-audit --no-fund --loglevel=error) || status=1
	fi
else
	echo "peers: npm not found; node client tests will SKIP"
fi

can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }

# apt_install PKG...: apt-get install, and apt-get update only when the
# install fails (stale or empty package lists).
apt_install() {
	apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1; }
}

have_py_fluent() { python3 -c 'import fluent.sender' >/dev/null 2>&1 || /usr/bin/python3 -c 'import fluent.sender' >/dev/null 2>&1; }
if ! have_py_fluent; then
	if can_apt; then
		echo "peers: installing python3-fluent-logger"
		apt_install python3-fluent-logger || status=1
	else
		echo "peers: cannot apt-get python3-fluent-logger; python client tests will SKIP"
	fi
fi

if ! command -v kcat >/dev/null 2>&1 && ! command -v kafkacat >/dev/null 2>&1; then
	if can_apt; then
		echo "peers: installing kcat"
		apt_install kcat || apt_install kafkacat || status=1
	else
		echo "peers: cannot apt-get kcat; kcat tests will SKIP"
	fi
fi

if ! /usr/bin/python3 -c 'import confluent_kafka' >/dev/null 2>&1; then
	if can_apt; then
		echo "peers: installing python3-confluent-kafka"
		apt_install python3-confluent-kafka || status=1
	else
		echo "peers: cannot apt-get python3-confluent-kafka; librdkafka tests will SKIP"
	fi
fi
exit $status
