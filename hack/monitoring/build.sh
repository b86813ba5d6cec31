#!/usr/bin/env bash
# Builds the monitoring stack the real-node tests run, from the Go module proxy: the Prometheus server (only the
# Kubernetes service discovery: the Prometheus Operator's PodMonitors and ServiceMonitors use no other), the
# Prometheus Operator and its config reloader; copies the operator's bundle (CRDs, RBAC, Deployment). Cached
# outside the repo keyed by this script and the pinned versions (bundle.yaml, written last, marks a complete
# build); linked into .local/monitoring.
# `go install` refuses the operator's module (its go.mod replaces two sub-modules with local paths), so a
# throwaway module requires the same sub-modules at the same version.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# Go module versions v0.3xx.y are Prometheus v3.xx.y; the same version promtool (hack/promtool) is built from.
PROMETHEUS_VERSION=v0.316.0
OPERATOR_VERSION=v0.85.0
key=$(cat "$here/build.sh" | sha256sum | cut -c1-8)-$PROMETHEUS_VERSION-$OPERATOR_VERSION
cache=${BERNINI_CACHE:-$HOME/.cache/bernini}/monitoring-$key
log=$cache/build.log
step() { printf '[monitoring %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { tail -n 30 "$log" >&2; exit 1; }

if [ ! -f "$cache/bundle.yaml" ]; then
  start=$(date +%s)
  rm -rf "$cache" && mkdir -p "$cache/build" "$cache/bin"
  export GOFLAGS=-buildvcs=false CGO_ENABLED=0
  step "building Prometheus $PROMETHEUS_VERSION and the Prometheus Operator $OPERATOR_VERSION (about 10 minutes cold; log: $log)"
  prometheus=$(go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" 2>>"$log" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p') || fail
  [ -n "$prometheus" ] || { echo "monitoring: the Go module proxy did not serve Prometheus $PROMETHEUS_VERSION" >&2; fail; }
  # The release it is (3.16.0 for v0.316.0): its build_info metric, and the Prometheus object's spec.version.
  release=$(cat "$prometheus/VERSION")
  GOBIN=$cache/bin go install -trimpath -tags remove_all_sd,enable_kubernetes_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" >>"$log" 2>&1 || fail
  operator=github.com/prometheus-operator/prometheus-operator
  module=$(go mod download -json "$operator@$OPERATOR_VERSION" 2>>"$log" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p') || fail
  [ -n "$module" ] || { echo "monitoring: the Go module proxy did not serve $operator $OPERATOR_VERSION" >&2; fail; }
  cd "$cache/build"
  printf 'module monitoringbuild\n\ngo 1.24.0\n\nrequire (\n\t%s %s\n\t%s/pkg/apis/monitoring %s\n\t%s/pkg/client %s\n)\n' \
    "$operator" "$OPERATOR_VERSION" "$operator" "$OPERATOR_VERSION" "$operator" "$OPERATOR_VERSION" > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/operator"\n\t_ "%s/cmd/prometheus-config-reloader"\n)\n' \
    "$operator" "$operator" > tools.go
  go mod tidy >>"$log" 2>&1 || fail
  for command in operator prometheus-config-reloader; do
    go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=${OPERATOR_VERSION#v}" \
      -o "$cache/bin/$command" "$operator/cmd/$command" >>"$log" 2>&1 || fail
  done
  echo "v$release" > "$cache/prometheus-version"
  cp "$module/bundle.yaml" "$cache/bundle.yaml.tmp" && chmod u+w "$cache/bundle.yaml.tmp"
  rm -rf "$cache/build"
  mv "$cache/bundle.yaml.tmp" "$cache/bundle.yaml"
  step "built in $(( $(date +%s) - start ))s"
fi
mkdir -p "$repo/.local"
ln -sfn "$cache" "$repo/.local/monitoring"
