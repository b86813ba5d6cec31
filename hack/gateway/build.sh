#!/usr/bin/env bash
# Builds Traefik (the harness's Gateway API implementation) from the Go module proxy in this folder's module,
# copies the Gateway API standard CRDs of the version KubeRay's operator is built against, caches both outside
# the repo keyed by this folder's files, and links them into .local/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# The CRDs of the Gateway API version KubeRay v1.6.2's operator uses (its go.mod); Traefik v3.6 serves v1.4.
GATEWAY_API_VERSION=v1.4.1
key=$(cat "$here/build.sh" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
cache=${BERNINI_CACHE:-$HOME/.cache/bernini}/gateway-$key

if [ ! -x "$cache/traefik" ] || [ ! -d "$cache/crds" ]; then
  start=$(date +%s)
  mkdir -p "$cache"
  printf '[gateway %s] building Traefik and fetching the Gateway API %s CRDs (minutes cold; log: %s)\n' \
    "$(date +%H:%M:%S)" "$GATEWAY_API_VERSION" "$cache/build.log"
  cd "$here"
  export GOFLAGS=-buildvcs=false CGO_ENABLED=0
  version=$(go list -m -f '{{.Version}}' github.com/traefik/traefik/v3)
  go build -trimpath -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$version" \
    -o "$cache/traefik.tmp" github.com/traefik/traefik/v3/cmd/traefik \
    >"$cache/build.log" 2>&1 || { tail -n 30 "$cache/build.log" >&2; exit 1; }
  # Downloaded outside any module, so this folder's go.sum stays Traefik's.
  crds=$(cd / && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$cache/crds" && mkdir -p "$cache/crds"
  cp "$crds"/config/crd/standard/*.yaml "$cache/crds/"
  mv "$cache/traefik.tmp" "$cache/traefik"
  printf '[gateway %s] built in %ss\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - start ))"
fi
mkdir -p "$repo/.local/bin"
ln -sfn "$cache/traefik" "$repo/.local/bin/traefik"
ln -sfn "$cache/crds" "$repo/.local/gateway-crds"
