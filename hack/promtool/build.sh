#!/usr/bin/env bash
# Builds promtool (the chart's PrometheusRule is checked and unit-tested with it) from the Go module proxy, without
# Prometheus' service-discovery plugins (remove_all_sd: promtool's rule tests need none, and they are most of the
# build), caches it outside the repo keyed by this script and the pinned version, and links it into .local/bin.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# Go module versions v0.3xx.y are Prometheus v3.xx.y. Pinned here, not in versions.env: that file keys the
# control plane's cache, and promtool should not rebuild it.
PROMETHEUS_VERSION=v0.316.0
key=$(cat "$here/build.sh" | sha256sum | cut -c1-8)-$PROMETHEUS_VERSION
cache=${BERNINI_CACHE:-$HOME/.cache/bernini}/promtool-$key

if [ ! -x "$cache/promtool" ]; then
  start=$(date +%s)
  mkdir -p "$cache"
  printf '[promtool %s] building promtool from Prometheus %s (a few minutes cold; log: %s)\n' \
    "$(date +%H:%M:%S)" "$PROMETHEUS_VERSION" "$cache/build.log"
  GOBIN=$cache/tmp GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install -trimpath -tags remove_all_sd -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" >"$cache/build.log" 2>&1 \
    || { tail -n 30 "$cache/build.log" >&2; exit 1; }
  mv "$cache/tmp/promtool" "$cache/promtool" && rmdir "$cache/tmp"
  printf '[promtool %s] built in %ss\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - start ))"
fi
mkdir -p "$repo/.local/bin"
ln -sfn "$cache/promtool" "$repo/.local/bin/promtool"
