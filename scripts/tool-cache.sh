# Sourced by the scripts that build the tests' programs from Go modules
# (k8s-tools.sh, prometheus-tool.sh, h2spec-tool.sh) and by test-tools.sh:
# CACHE, the folder outside git they build into, and lock_cache, which
# holds the cache's lock until the script exits — one build at a time
# (make test starts them early in the background; a second caller waits,
# then finds them built).
CACHE=${KUMA_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kuma-metrics}
mkdir -p "$CACHE"
lock_cache() {
  exec 9>"$CACHE/.build.lock"
  flock 9
}
