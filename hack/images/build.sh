#!/usr/bin/env bash
# Builds the images the real-node cluster runs, without a Docker engine or a registry, as docker-save
# archives that containerd imports (`ctr -n k8s.io images import`), each cached under $BERNINI_CACHE/images
# by what goes into it:
#   serving: (and the operator, the same layers with `bernini` as entrypoint, for the chart on real nodes)
#            base layer (serving-base.sh: Debian bookworm minbase, python3, the serve extra's dependencies in
#            a venv at /opt/bernini, uid 1000 "ray": what images/serving.Dockerfile adds to the Neuron DLC)
#            + app layer (this package installed --no-deps on top, through an overlay), so a source change
#            rebuilds only the small app layer;
#   pause:   the Kubernetes module's pause.c, static;
#   kuberay: the KubeRay operator binary that `make controlplane` built (static Go);
#   traefik: the Gateway API implementation that `make gateway` built (static Go).
# Prints KEY=value lines (image references and archive paths) on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${BERNINI_CACHE:-$HOME/.cache/bernini}/images
mkdir -p "$cache"
step() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
uv=$repo/.venv/bin/uv
[ -x "$uv" ] || { echo "images: $uv is missing: run make venv first" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "images: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
source "$here/serving-base.sh"

digest() { cat "$@" | sha256sum | cut -c1-16; }
# Only the dependency lists of pyproject.toml go into the base (not, say, its pytest settings).
dependencies=$(python3 -c 'import json, sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(json.dumps([p["dependencies"], p["optional-dependencies"]], sort_keys=True))' "$repo/pyproject.toml")
base_key=$(echo "$dependencies" | cat "$here/serving-base.sh" - | sha256sum | cut -c1-16)
app_key=$(cd "$repo" && { echo "$base_key"; find operator -type f -name '*.py' -print0 | sort -z | xargs -0 sha256sum; } | digest)
base=$cache/serving-base-$base_key
app=$cache/serving-app-$app_key

if [ ! -f "$base/layer.tar" ]; then
  step "building the serving base layer (debootstrap, python, Ray, torch: several minutes, once)"
  rm -rf "$base.tmp" && mkdir -p "$base.tmp"
  build_serving_base "$base.tmp"
  mv "$base.tmp" "$base"
fi

if [ ! -f "$app/layer.tar" ]; then
  step "building the serving app layer (this package on top of the base)"
  rm -rf "$app.tmp" && mkdir -p "$app.tmp"/{lower,upper,work,merged}
  tar -C "$app.tmp/lower" -xf "$base/layer.tar"
  mount -t overlay overlay -o "lowerdir=$app.tmp/lower,upperdir=$app.tmp/upper,workdir=$app.tmp/work" "$app.tmp/merged"
  status=0
  { cp "$uv" "$app.tmp/merged/tmp/uv" && mkdir -p "$app.tmp/merged/src" \
    && cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/operator" "$app.tmp/merged/src/" \
    && rm -rf "$app.tmp/merged/src/operator/"*.egg-info \
    && in_root "$app.tmp/merged" /tmp/uv pip install -q --no-deps --compile-bytecode --python /opt/bernini/bin/python /src \
    && rm -rf "$app.tmp/merged/src" "$app.tmp/merged/tmp/uv" "$app.tmp/merged/uvcache"; } || status=$?
  umount "$app.tmp/merged"
  [ $status -eq 0 ] || exit $status
  # The layer is what changed: drop overlay whiteouts (char 0/0) and the chroot's mount points.
  find "$app.tmp/upper" -type c -delete
  rm -rf "$app.tmp/upper/proc" "$app.tmp/upper/dev" "$app.tmp/upper/etc/resolv.conf"
  tar -C "$app.tmp/upper" --numeric-owner -cf "$app.tmp/layer.tar" .
  rm -rf "$app.tmp"/{lower,upper,work,merged}
  mv "$app.tmp" "$app"
fi

archive() { # output reference layers... [-- archive.py options]
  python3 "$here/archive.py" "$@"
}

serving_ref=bernini.local/bernini-serving:$app_key
operator_ref=bernini.local/bernini-operator:$app_key
serving_tar=$cache/serving-$app_key-$(digest "$here/archive.py" | cut -c1-6).tar
if [ ! -f "$serving_tar" ]; then
  step "writing $serving_tar"
  archive "$serving_tar.tmp" "$serving_ref" --user 1000:100 --workdir /home/ray \
    --env PATH=/opt/bernini/bin:/usr/local/bin:/usr/bin:/bin "$base/layer.tar" "$app/layer.tar" \
    --also "$operator_ref 65532:65532 /opt/bernini/bin/bernini"
  mv "$serving_tar.tmp" "$serving_tar"
fi

pause_ref=bernini.local/pause:3.10
pause_tar=$cache/pause-3.10.tar
if [ ! -f "$pause_tar" ]; then
  step "building the pause image from the Kubernetes module's pause.c"
  source "$repo/hack/controlplane/versions.env"
  src=$(cd "$repo/hack/controlplane" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  work=$(mktemp -d)
  mkdir -p "$work/root"
  gcc -Os -static -DVERSION=v3.10-bernini -o "$work/root/pause" "$src/build/pause/linux/pause.c"
  strip "$work/root/pause"
  tar -C "$work/root" --numeric-owner -cf "$work/layer.tar" .
  archive "$pause_tar.tmp" "$pause_ref" --entrypoint /pause --user 65535:65535 "$work/layer.tar"
  rm -rf "$work"
  mv "$pause_tar.tmp" "$pause_tar"
fi

# A static Go binary alone in an image, run as 65532. Args: binary, image name, its path in the image (the
# entrypoint; default /<binary's name>); prints the reference and archive.
static_go_image() {
  local bin ref tar work path=${3:-/$(basename "$1")}
  bin=$(readlink -f "$1")
  [ -x "$bin" ] || { echo "images: $1 is missing: run make controlplane gateway (and monitoring) first" >&2; exit 1; }
  ref=bernini.local/$2:$(echo "$path" | cat "$bin" - | sha256sum | cut -c1-16)
  tar=$cache/$2-${ref##*:}.tar
  if [ ! -f "$tar" ]; then
    step "packing the $2 image"
    work=$(mktemp -d)
    mkdir -p "$work/root/tmp" "$work/root$(dirname "$path")" && chmod 1777 "$work/root/tmp"
    cp "$bin" "$work/root$path"
    tar -C "$work/root" --numeric-owner -cf "$work/layer.tar" .
    archive "$tar.tmp" "$ref" --entrypoint "$path" --user 65532:65532 "$work/layer.tar" >&2
    rm -rf "$work"
    mv "$tar.tmp" "$tar"
  fi
  echo "$ref $tar"
}
kuberay=$(static_go_image "$repo/.local/bin/ray-operator" kuberay-operator) && kuberay_ref=${kuberay% *} kuberay_tar=${kuberay#* }
traefik=$(static_go_image "$repo/.local/bin/traefik" traefik) && traefik_ref=${traefik% *} traefik_tar=${traefik#* }
# The monitoring stack, once `make monitoring` built it: Prometheus keeps its data at /prometheus, and the
# Prometheus Operator names /bin/prometheus-config-reloader as the reloader's command.
monitoring=$repo/.local/monitoring/bin
if [ -d "$monitoring" ]; then
  for image in prometheus:prometheus prometheus-operator:operator prometheus-config-reloader:prometheus-config-reloader; do
    built=$(static_go_image "$monitoring/${image#*:}" "${image%%:*}" "/bin/${image#*:}")
    key=$(echo "${image%%:*}" | tr a-z- A-Z_)
    echo "${key}_IMAGE=${built% *}"
    echo "${key}_ARCHIVE=${built#* }"
  done
fi

# Older serving archives and app layers are 5 GiB each and never used again: keep the current ones only.
for stale in "$cache"/serving-*.tar "$cache"/serving-app-*; do
  case "$stale" in "$serving_tar"|"$app") ;; *) rm -rf "$stale" ;; esac
done

echo "CACHE_DIR=$cache"
echo "BASE_KEY=$base_key"
echo "SERVING_IMAGE=$serving_ref"
echo "SERVING_ARCHIVE=$serving_tar"
echo "OPERATOR_IMAGE=$operator_ref"
echo "OPERATOR_ARCHIVE=$serving_tar"
echo "PAUSE_IMAGE=$pause_ref"
echo "PAUSE_ARCHIVE=$pause_tar"
echo "KUBERAY_IMAGE=$kuberay_ref"
echo "KUBERAY_ARCHIVE=$kuberay_tar"
echo "TRAEFIK_IMAGE=$traefik_ref"
echo "TRAEFIK_ARCHIVE=$traefik_tar"
