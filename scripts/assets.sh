#!/usr/bin/env bash
# Bundle the page assets the gateway serves itself (no request leaves the host): the duty console
# (below), and Swagger UI's
# script, stylesheet and icon from the pinned swagger-ui-dist (services/gateway/assets/package.json,
# locked by its package-lock.json) into services/gateway/api/static/, which the wheel carries.
# Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

src=services/gateway/assets
out=services/gateway/api/static
files=(swagger-ui-bundle.js swagger-ui.css favicon-32x32.png)

fresh=1
for f in "${files[@]}"; do
  if [ ! -f "$out/$f" ] || [ "$src/package-lock.json" -nt "$out/$f" ]; then fresh=0; fi
done
if [ "$fresh" = 0 ]; then
echo "bundling the gateway's page assets (swagger-ui-dist, from the npm registry) …"
# --ignore-scripts: the package's install script only reports analytics
(cd "$src" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$out"
for f in "${files[@]}"; do cp "$src/node_modules/swagger-ui-dist/$f" "$out/$f"; done
fi

# The duty console (services/gateway/console: Vue and Leaflet, built with Vite, pinned by its
# package-lock.json) into services/gateway/api/static/console/, rebuilt when a source is newer.
console_src=services/gateway/console
console_out=services/gateway/api/static/console/index.html
if [ ! -f "$console_out" ] || [ -n "$(find "$console_src" -path "$console_src/node_modules" -prune -o -newer "$console_out" -type f -print -quit)" ]; then
  echo "building the duty console (Vue, Leaflet and Vite, from the npm registry) …"
  (cd "$console_src" && npm ci --no-audit --no-fund --loglevel=error && npx --no-install vite build --logLevel warn)
fi
