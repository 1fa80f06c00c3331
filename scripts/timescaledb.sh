#!/usr/bin/env bash
# Build TimescaleDB from vendor/timescaledb (the released source and a one-line patch) against
# Debian's PostgreSQL and install it there, once per machine: an installed library of this
# version is left as it is. Needs root (apt and the install into /usr/lib/postgresql), like the
# rest of the set-up.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.28.3
SHA256=c80abd42995a317d9c046da6499a7a6e63c58e188124a2f20580f7c82fa4b801
SRC="vendor/timescaledb/timescaledb-$VERSION.tar.gz"
PATCH="vendor/timescaledb/timescaledb-$VERSION-bgw-portal.patch"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

PG_CONFIG="${PG_CONFIG:-$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -n 1 || true)}"
if [ -z "$PG_CONFIG" ] || [ ! -x "$PG_CONFIG" ]; then
  # pg_config comes with the server headers
  major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
  as_root apt-get install -y -qq --no-install-recommends "postgresql-server-dev-${major:-15}"
  PG_CONFIG=$(ls -d /usr/lib/postgresql/*/bin/pg_config | sort -V | tail -n 1)
fi
libdir=$("$PG_CONFIG" --pkglibdir)
if [ -f "$libdir/timescaledb-$VERSION.so" ]; then
  exit 0  # built and installed before
fi

pg_major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
if [ "$pg_major" != 15 ]; then
  echo "TimescaleDB $VERSION builds against PostgreSQL 15; found $pg_major" >&2
  exit 1
fi
need=()
[ -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ] || need+=("postgresql-server-dev-$pg_major")
command -v cmake >/dev/null || need+=(cmake)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v make >/dev/null || need+=(make)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing what TimescaleDB builds with: ${need[*]} …"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "$SHA256  $SRC" | sha256sum -c --quiet -
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$SRC" -C "$work"
(cd "$work/timescaledb-$VERSION" && patch -p1 --quiet < "$OLDPWD/$PATCH")
echo "building TimescaleDB $VERSION against PostgreSQL $pg_major (about a minute) …"
(
  cd "$work/timescaledb-$VERSION"
  ./bootstrap -DCMAKE_BUILD_TYPE=Release -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
    -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF -DPG_CONFIG="$PG_CONFIG" >"$work/configure.log" 2>&1 \
    || { cat "$work/configure.log" >&2; exit 1; }
  make -C build -j"$(nproc)" >"$work/build.log" 2>&1 || { tail -n 50 "$work/build.log" >&2; exit 1; }
  as_root make -C build install >"$work/install.log" 2>&1 || { tail -n 50 "$work/install.log" >&2; exit 1; }
)
echo "TimescaleDB $VERSION installed into $libdir"
