#!/usr/bin/env bash
# make generate: compiles api/**/*.proto into Go with protoc (Debian's
# protobuf-compiler) and the pinned protoc-gen-go / protoc-gen-go-grpc.
# Envoy's .proto sources are not in any Go module, so their descriptors are
# exported from the compiled Go packages (tools/protodescriptors) first.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
TOOLS=$PWD/bin/tools
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2

if ! command -v protoc >/dev/null; then
  echo "installing protoc (Debian protobuf-compiler)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi
mkdir -p "$TOOLS"
GOBIN=$TOOLS $GO install google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO
GOBIN=$TOOLS $GO install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$GO run ./tools/protodescriptors -out "$tmp/envoy.pb"

mapfile -t protos < <(cd api && find . -name '*.proto' | sed 's|^\./||' | sort)
( cd api && PATH=$TOOLS:$PATH protoc \
    --descriptor_set_in="$tmp/envoy.pb" -I . \
    --go_out=. --go_opt=paths=source_relative \
    --go-grpc_out=. --go-grpc_opt=paths=source_relative \
    "${protos[@]}" )
echo "generated: ${protos[*]}"
