#!/usr/bin/env bash
# Builds Argo CD (application-controller and repo-server share one multi-call binary) from the Go module
# proxy, caches it outside the repo keyed by the pinned version, and links it into .local/argocd.
# `go install` refuses Argo CD's module (its go.mod has replace directives), so a throwaway module carries
# the same replace block; the gitops-engine it replaces with a local path is published as its own module.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$repo/hack/controlplane/versions.env"
key=$(cat "$here/build.sh" | sha256sum | cut -c1-8)-$ARGOCD_VERSION-$CRD_TOOLCHAIN
cache=${BERNINI_CACHE:-$HOME/.cache/bernini}/argocd-$key
log=$cache/build.log
step() { printf '[argocd %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$cache/bin/argocd" ]; then
  start=$(date +%s)
  mkdir -p "$cache/build" "$cache/bin"
  export GOTOOLCHAIN=$CRD_TOOLCHAIN GOFLAGS=-buildvcs=false CGO_ENABLED=0
  module=$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" 2>>"$log" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -n "$module" ] || { tail -n 20 "$log" >&2; echo "argocd: the Go module proxy did not serve argo-cd $ARGOCD_VERSION" >&2; exit 1; }
  cd "$cache/build"
  { printf 'module argocdbuild\n\ngo %s\n\nrequire github.com/argoproj/argo-cd/v3 %s\n\n' "${CRD_TOOLCHAIN#go}" "$ARGOCD_VERSION"
    sed -n '/^replace (/,/^)/p' "$module/go.mod"; } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/argoproj/argo-cd/v3/cmd"\n' > tools.go
  step "building Argo CD $ARGOCD_VERSION (about 5 minutes cold; log: $log)"
  go mod tidy >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
  ldflags="-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v}"
  go build -trimpath -ldflags "$ldflags" -o "$cache/bin/argocd.tmp" github.com/argoproj/argo-cd/v3/cmd >>"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; exit 1; }
  # v3.6 verifies commit signatures on every manifest generation through this wrapper, found on PATH.
  cp "$module/hack/git-verify-wrapper.sh" "$module/hack/gpg-wrapper.sh" "$cache/bin/"
  cp -r "$module/manifests/crds" "$cache/crds"
  cp "$module/manifests/base/config/argocd-cm.yaml" "$module/manifests/base/config/argocd-rbac-cm.yaml" \
     "$module/manifests/base/config/argocd-secret.yaml" "$module/manifests/base/config/argocd-cmd-params-cm.yaml" "$cache/"
  chmod -R u+w "$cache/crds" "$cache"/*.yaml && chmod 755 "$cache"/bin/*.sh
  mv "$cache/bin/argocd.tmp" "$cache/bin/argocd"
  rm -rf "$cache/build"
  step "built in $(( $(date +%s) - start ))s"
fi
ln -sfn "$cache" "$repo/.local/argocd"
