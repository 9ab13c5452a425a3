#!/usr/bin/env bash
# The Grafana datasource plugin of grafana-datasource/ (kumahq-kuma-datasource).
#
#   scripts/plugin.sh build   dist/ (frontend, plugin.json, img, README.md,
#                             LICENSE, the backend for linux amd64 and arm64)
#                             and bin/kumahq-kuma-datasource-<version>.zip
#   scripts/plugin.sh test    the frontend's type check (tsc --noEmit) and
#                             unit tests (vitest), then build with the
#                             backend for linux amd64 only (the one the
#                             tests run: arm64's is a second compilation of
#                             the whole dependency tree, ~5 min on a fresh
#                             machine, for a backend with no arch-specific
#                             code; `build` always makes both)
#
# npm's dependencies go to grafana-datasource/node_modules (ignored by git)
# with `npm ci`, only when package-lock.json (or node) changed since the last
# install: the stamp node_modules/.kuma-metrics-stamp holds their hashes.
# Downloads come from npm's own cache (~/.npm) when it has them.
#
# node >= 20.19 and npm are needed: Vite 8, rspack 2 and jsdom 27 require it
# (engines). The machine image has node 20.20.2 and npm 11.19; Debian bookworm's
# own nodejs is 18.20, too old.
# Missing, `test` fails when CI=true and says so and does nothing otherwise;
# `build` always fails.
#
# PLUGIN_VERSION sets the version in plugin.json and the zip's name (default:
# package.json's).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
P=$ROOT/grafana-datasource
GO=${GO:-go}
MIN_NODE=20.19
ARCHES=(amd64 arm64)
[ "${1:-}" = test ] && ARCHES=(amd64)

cmd=${1:-}
case "$cmd" in
build | test) ;;
*)
  echo "usage: $0 build|test" >&2
  exit 2
  ;;
esac

# node_ok says whether node >= MIN_NODE and npm are there; otherwise it
# prints why.
node_ok() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are not installed (node >= $MIN_NODE is needed; Debian bookworm's nodejs 18 is too old)" >&2
    return 1
  fi
  local v
  v=$(node --version)
  if ! node -e "const [a,b]=process.versions.node.split('.').map(Number); const [x,y]='$MIN_NODE'.split('.').map(Number); process.exit(a>x||(a===x&&b>=y)?0:1)"; then
    echo "node $v is too old: the frontend's toolchain (Vite 8, Vitest 4, rspack 2) needs node >= $MIN_NODE" >&2
    return 1
  fi
}

if ! node_ok; then
  if [ "$cmd" = test ] && [ "${CI:-}" != true ]; then
    echo "SKIPPED: the plugin's frontend tests and build (CI=true makes this a failure)" >&2
    exit 0
  fi
  echo "FAIL: the plugin's frontend needs node and npm" >&2
  exit 1
fi

if ! command -v zip >/dev/null; then
  echo "FAIL: zip is not installed (make test-deps installs it)" >&2
  exit 1
fi

cd "$P"

# deps installs node_modules with npm ci when the lock file or node changed.
deps() {
  local want
  want="$(sha256sum package-lock.json | cut -d' ' -f1) node-$(node --version)"
  if [ -f node_modules/.kuma-metrics-stamp ] && [ "$(cat node_modules/.kuma-metrics-stamp)" = "$want" ]; then
    return
  fi
  echo "npm ci (package-lock.json changed)"
  nice -n 10 npm ci --prefer-offline --no-audit --no-fund
  echo "$want" >node_modules/.kuma-metrics-stamp
}

build() {
  local version executable id zip a
  version=${PLUGIN_VERSION:-$(node -p "require('./package.json').version")}
  id=$(node -p "require('./src/plugin.json').id")
  executable=$(node -p "require('./src/plugin.json').executable")
  # The frontend first: its build empties dist/ but for the backend's files.
  PLUGIN_VERSION=$version nice -n 10 node build.mjs
  for a in "${ARCHES[@]}"; do
    CGO_ENABLED=0 GOOS=linux GOARCH=$a nice -n 10 "$GO" build -ldflags "-s -w" \
      -o "dist/${executable}_linux_$a" ./pkg
  done
  for f in module.js plugin.json img/logo.svg README.md LICENSE "${ARCHES[@]/#/${executable}_linux_}"; do
    if [ ! -s "dist/$f" ]; then
      echo "FAIL: dist/$f is missing" >&2
      exit 1
    fi
  done
  # The zip Grafana installs: one folder named after the plugin's id.
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  cp -a dist "$stage/$id"
  mkdir -p "$ROOT/bin"
  zip="$ROOT/bin/$id-$version.zip"
  rm -f "$zip"
  (cd "$stage" && zip -q -r -X "$zip" "$id")
  echo "dist/: $(cd dist && find . -type f | sort | sed 's|^\./||' | tr '\n' ' ')"
  echo "zip: $zip"
}

deps
case "$cmd" in
build) build ;;
test)
  nice -n 10 npx --no-install tsc --noEmit
  nice -n 10 npx --no-install vitest run
  build
  ;;
esac
