#!/usr/bin/env bash
# Installs, from Debian's packages, the programs the tests run for real
# (Prometheus 2.42 for the end-to-end discovery and scrape tests; iptables
# and iproute2 for the transparent proxy's tests in network namespaces; zip
# for the Grafana plugin's build; PostgreSQL 15 for the PostgreSQL store). Does
# nothing when they are present.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
# The transparent proxy's tests: iptables in network namespaces.
command -v iptables-restore >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
# make plugin's zip. Not node: Debian bookworm's nodejs (18.20) is older
# than the plugin's frontend needs (>= 20.19); the machine image has 20.20.
command -v zip >/dev/null || need+=(zip)
# The PostgreSQL store's tests start Debian's PostgreSQL 15 themselves
# (internal/pgtest), as the unprivileged user postgres the package creates.
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test dependencies: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
fi
