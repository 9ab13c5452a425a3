#!/usr/bin/env bash
# Starts the builds of the programs the tests run that come from Go modules
# (kube-apiserver & co., Prometheus, h2spec: scripts/k8s-tools.sh,
# prometheus-tool.sh, h2spec-tool.sh) in the background, niced, so that on a
# fresh machine they compile while `make test` lints and runs the plugin's
# tests (downloads, npm and waiting tests leave the CPUs part idle). The
# scripts take a lock on the cache: when the tests ask for the programs,
# they wait for these builds and find them built. Output goes to
# test-tools.log in the cache. Does nothing when everything is built.
set -euo pipefail
cd "$(dirname "$0")"
self=$PWD/$(basename "$0")
. ./tool-cache.sh
if [ "${1:-}" = run ]; then
  for s in k8s-tools.sh prometheus-tool.sh h2spec-tool.sh; do
    echo "== $s $(date +%T)"
    KUMA_TOOLS_NO_APT=1 KUMA_TOOLS_NICE=19 "./$s" || echo "$s failed: the test run builds it again and reports why"
  done
  echo "== done $(date +%T)"
  exit 0
fi
nohup "$self" run >"$CACHE/test-tools.log" 2>&1 </dev/null &
echo "building the test programs in the background (log: $CACHE/test-tools.log)"
