#!/usr/bin/env bash
# Builds Prometheus from its Go module (github.com/prometheus/prometheus,
# cmd/prometheus) into a cache outside git, for the Kubernetes cluster test:
# Debian's Prometheus 2.42 predates kuma_sd_configs' current shape, the
# module's has it. Built in a small wrapper module kept out of ours, without
# the web UI's assets (the API and /metrics are all the tests use) and with
# only the service discoveries the tests use (Kubernetes, Kuma's xDS; file
# and HTTP are always in): the other twenty-odd bring cloud SDKs that
# would be most of the build (PROM_SD_TAGS). Prints
# the binary's path on its last line. Does nothing when it is there already:
# the first build takes several minutes on 2 cores and runs niced.
set -euo pipefail
PROM_MODULE_VERSION=${PROM_MODULE_VERSION:-0.316.0}
PROM_VERSION=${PROM_VERSION:-3.16.0}
. "$(dirname "$0")/tool-cache.sh"
PROM_SD_TAGS=${PROM_SD_TAGS:-remove_all_sd,enable_kubernetes_sd,enable_xds_sd}
DIR=$CACHE/prometheus-v$PROM_VERSION-$(echo "$PROM_SD_TAGS" | tr ',' '-' | sed 's/remove_all_sd-//; s/enable_//g')
BIN=$DIR/prometheus

lock_cache

if [ ! -x "$BIN" ]; then
  echo "building prometheus v$PROM_VERSION into $DIR (once per machine, several minutes cold)" >&2
  mkdir -p "$DIR"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init kuma-metrics/prometheus-tool >/dev/null 2>&1
  go mod edit -require=github.com/prometheus/prometheus@v$PROM_MODULE_VERSION
  ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROM_VERSION"
  GOFLAGS=-mod=mod nice -n 19 go build -trimpath -gcflags=all=-dwarf=false -tags "$PROM_SD_TAGS" -ldflags "$ldflags" -o "$BIN.tmp" \
    github.com/prometheus/prometheus/cmd/prometheus >&2
  mv "$BIN.tmp" "$BIN"
fi
echo "$BIN"
