#!/usr/bin/env bash
# The Debian packages the real-node cluster runs on: containerd, runc, the CNI plugins, iptables and conntrack
# (kube-proxy), debootstrap (the serving image's base), redis-server (Argo CD's cache in the GitOps tests).
# Installs only what is missing; needs root.
set -euo pipefail
declare -A provides=([containerd]=containerd [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
                     [iptables]=iptables [conntrack]=conntrack [debootstrap]=debootstrap
                     [redis-server]=redis-server)
missing=()
for command in "${!provides[@]}"; do
  if [[ $command == /* ]]; then [ -x "$command" ] || missing+=("${provides[$command]}")
  else command -v "$command" >/dev/null || missing+=("${provides[$command]}"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "real nodes need these Debian packages and root to install them: ${missing[*]}" >&2
  exit 1
fi
echo "[node packages] installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
