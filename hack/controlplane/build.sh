#!/usr/bin/env bash
# Builds every binary the local control plane needs from the Go module proxy (no Docker, no release
# downloads), caches them outside the repo keyed by the pinned versions, and links them into .local/bin.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/versions.env"

benchtools=$(cd "$here/../benchtools" && pwd)
key=$(cat "$here/versions.env" "$here/go.mod" "$here/go.sum" "$benchtools/go.mod" "$benchtools/go.sum" | sha256sum | cut -c1-16)
cache=${BERNINI_CACHE:-$HOME/.cache/bernini}/controlplane-$key
bin=$cache/bin
link=$repo/.local/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy kwok ray-operator helm
          versitygw s5cmd coredns)

log=$cache/build.log  # every `go: downloading` line lands here; the terminal gets one line per binary

step() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
quietly() { "$@" >>"$log" 2>&1; }

fail_proxy() {
  tail -n 30 "$log" >&2
  echo "controlplane: building $1 failed (full log: $log); if the lines above say 'not available' or" >&2
  echo "'410 Gone', the Go module proxy refused that version: pick another in hack/controlplane/versions.env" >&2
  exit 1
}

link_all() {
  mkdir -p "$link"
  for b in "${binaries[@]}"; do ln -sfn "$bin/$b" "$link/$b"; done
}

mkdir -p "$bin"
start=$(date +%s)
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
minor=${K8S_VERSION#*.}; minor=${minor%%.*}
ldflags+=" -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"

cd "$here"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  if [ ! -x "$bin/$cmd" ]; then
    step "building $cmd v$K8S_VERSION"
    quietly go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd" || fail_proxy "$cmd"
  fi
done
if [ ! -x "$bin/etcd" ]; then
  step "building etcd (version selected by the Kubernetes module graph)"
  quietly go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3 || fail_proxy etcd
fi

install_tool() { # name module@version
  if [ ! -x "$bin/$1" ]; then
    step "installing $1 from $2"
    GOBIN=$bin quietly go install -trimpath -ldflags "-s -w" "$2" || fail_proxy "$1"
  fi
}
install_tool kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
install_tool ray-operator "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION"
install_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
# The S3-compatible server of the tests: Apache-2.0, serves a plain directory, fast enough for bench-pull.
install_tool versitygw "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
# Cluster DNS of the real-node cluster (its default plugin set includes kubernetes).
install_tool coredns "github.com/coredns/coredns@$COREDNS_VERSION"

if [ ! -x "$bin/s5cmd" ]; then
  # Built inside its own module: `go install s5cmd@version` is refused (the proxy hides its version list).
  step "building s5cmd (bench-pull peer)"
  (cd "$benchtools" && quietly go build -trimpath -ldflags "-s -w" -o "$bin/s5cmd" github.com/peak/s5cmd/v2) || fail_proxy s5cmd
fi

# KubeRay's CRDs and KWOK's default stages ship inside their modules; keep copies next to the binaries.
module_dir() { go mod download -json "$1" 2>>"$log" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }
if [ ! -d "$cache/kuberay-crds" ]; then
  crds=$(module_dir "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")/config/crd/bases
  mkdir -p "$cache/kuberay-crds.tmp" && cp "$crds"/*.yaml "$cache/kuberay-crds.tmp/"
  chmod u+w "$cache"/kuberay-crds.tmp/*.yaml && mv "$cache/kuberay-crds.tmp" "$cache/kuberay-crds"
fi
if [ ! -d "$cache/kuberay-rbac" ]; then
  rbac=$(module_dir "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")/config/rbac
  mkdir -p "$cache/kuberay-rbac.tmp" && cp "$rbac/role.yaml" "$cache/kuberay-rbac.tmp/"
  chmod u+w "$cache"/kuberay-rbac.tmp/*.yaml && mv "$cache/kuberay-rbac.tmp" "$cache/kuberay-rbac"
fi
if [ ! -f "$cache/kwok-stages.yaml" ]; then
  stages=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage
  for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
           pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    cat "$stages/$f.yaml"; echo "---"
  done > "$cache/kwok-stages.yaml.tmp"
  mv "$cache/kwok-stages.yaml.tmp" "$cache/kwok-stages.yaml"
fi

if [ ! -d "$cache/third-party-crds" ]; then
  step "fetching Karpenter and Argo CD CRDs (example fixtures)"
  karpenter=$(GOTOOLCHAIN=$CRD_TOOLCHAIN module_dir "github.com/aws/karpenter-provider-aws@$KARPENTER_AWS_VERSION")
  argocd=$(GOTOOLCHAIN=$CRD_TOOLCHAIN module_dir "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION")
  [ -n "$karpenter" ] && [ -n "$argocd" ] || fail_proxy "third-party CRDs"
  mkdir -p "$cache/third-party-crds.tmp"
  cp "$karpenter"/pkg/apis/crds/karpenter.sh_nodepools.yaml "$karpenter"/pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml \
     "$argocd"/manifests/crds/application-crd.yaml "$cache/third-party-crds.tmp/"
  chmod u+w "$cache"/third-party-crds.tmp/*.yaml && mv "$cache/third-party-crds.tmp" "$cache/third-party-crds"
fi

link_all
ln -sfn "$cache/kuberay-crds" "$repo/.local/kuberay-crds"
ln -sfn "$cache/kuberay-rbac" "$repo/.local/kuberay-rbac"
ln -sfn "$cache/third-party-crds" "$repo/.local/third-party-crds"
ln -sfn "$cache/kwok-stages.yaml" "$repo/.local/kwok-stages.yaml"
step "ready in $(( $(date +%s) - start ))s: $cache"
