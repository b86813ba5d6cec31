#!/usr/bin/env bash
# make check-gpu, on a GPU machine with PyTorch but no network: the carried wheels go into a temporary
# folder, then the stage benchmark runs, GPU beside CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! ls .gpu-wheels/*.whl > /dev/null 2>&1; then
    echo "no wheels in .gpu-wheels/: run 'make gpu-wheels' where there is network, then carry .gpu-wheels" >&2
    exit 2
fi
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu-wheels/*.whl
PYTHONPATH="$site:operator" PYTHONUNBUFFERED=1 python3 -m tests.bench.gpu
