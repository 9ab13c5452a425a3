#!/usr/bin/env bash
# Builds h2spec (github.com/summerwind/h2spec, the HTTP/2 conformance
# tester) from its Go module into a cache outside git, for the proxy's
# h2spec test (pkg/proxy/h2spec_test.go). The module has no go.mod of its
# own (the module proxy serves its v2 tag as +incompatible; it was built
# with dep), so it is built in a small wrapper module kept out of ours that
# pins its dependencies to versions it is known to build with. Prints the binary's path on its last line. Does nothing when
# it is there already.
set -euo pipefail
H2SPEC_VERSION=${H2SPEC_VERSION:-2.2.1}
. "$(dirname "$0")/tool-cache.sh"
DIR=$CACHE/h2spec-v$H2SPEC_VERSION
BIN=$DIR/h2spec

lock_cache

if [ ! -x "$BIN" ]; then
  echo "building h2spec v$H2SPEC_VERSION into $DIR (once per machine)" >&2
  mkdir -p "$DIR"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  go mod init kuma-metrics/h2spec-tool >/dev/null 2>&1
  go mod edit -require=github.com/summerwind/h2spec@v$H2SPEC_VERSION+incompatible \
    -require=github.com/spf13/cobra@v1.10.2 \
    -require=github.com/fatih/color@v1.19.0 \
    -require=golang.org/x/net@v0.63.0
  GOFLAGS=-mod=mod nice -n 19 go build -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w -X main.VERSION=$H2SPEC_VERSION" \
    -o "$BIN.tmp" github.com/summerwind/h2spec/cmd/h2spec >&2
  mv "$BIN.tmp" "$BIN"
fi
echo "$BIN"
