# Sourced by build.sh: the serving image's base layer recipe and the chroot helper. The base layer's cache
# key is this file plus pyproject.toml's dependency lists: edit either and the base is rebuilt.

in_root() { # root, command...: run inside a chroot with /proc, /dev, the uv cache and the host's CA bundle
  local root=$1; shift
  mkdir -p "$root/proc" "$root/dev" "$root/uvcache" && touch "$root/tmp/host-ca.crt"
  mount -t proc proc "$root/proc"; mount --bind /dev "$root/dev"; mount --bind "$($uv cache dir)" "$root/uvcache"
  # The host's CA bundle (it may trust a proxy in front of the package index); never left in the image.
  mount --bind "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/host-ca.crt"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  local status=0
  chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root UV_CACHE_DIR=/uvcache UV_LINK_MODE=copy \
    SSL_CERT_FILE=/tmp/host-ca.crt "$@" || status=$?
  umount "$root/tmp/host-ca.crt" "$root/uvcache" "$root/dev" "$root/proc"
  rm -f "$root/tmp/host-ca.crt"
  : > "$root/etc/resolv.conf"
  return $status
}

build_serving_base() { # directory: writes directory/layer.tar
  local out=$1 root=$1/rootfs
  debootstrap --variant=minbase --include=python3,python3-venv,wget,ca-certificates,procps,libgomp1 \
    bookworm "$root" http://deb.debian.org/debian > "$out/debootstrap.log" 2>&1 \
    || { tail -20 "$out/debootstrap.log" >&2; return 1; }
  cp "$uv" "$root/usr/local/bin/uv"
  mkdir -p "$root/src" && cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/operator" "$root/src/"
  rm -rf "$root/src/operator/"*.egg-info
  # The serve extra's dependencies, then the package itself removed again: it is the app layer. Compiled to
  # bytecode here: pods run as uid 1000 and cannot write __pycache__ into the root-owned venv, so without it
  # every process (the init container's pull, each Ray worker) compiles what it imports from source again.
  in_root "$root" sh -c 'python3 -m venv /opt/bernini && uv pip install -q --compile-bytecode --python /opt/bernini/bin/python "/src[serve]" \
    && uv pip uninstall -q --python /opt/bernini/bin/python bernini-operator'
  rm -rf "$root/src" "$root/usr/local/bin/uv" "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  # bash -l (KubeRay's container command) resets PATH from /etc/profile: link the venv's tools into it.
  for tool in python python3 ray serve bernini; do ln -sfn "/opt/bernini/bin/$tool" "$root/usr/local/bin/$tool"; done
  chroot "$root" useradd --uid 1000 --gid 100 --create-home --shell /bin/bash ray
  tar -C "$root" --numeric-owner -cf "$out/layer.tar" .
  rm -rf "$root"
}
