#!/usr/bin/env bash
# The wheels benchmarks/gpu.py needs on the GPU machine and its image lacks (it has torch, transformers, numpy,
# tokenizers, httpx, aiohttp, prometheus-client, jinja2; not the service's web and settings stack nor the
# feedback store's SQLAlchemy and Alembic), at the versions installed here, for the image's Python 3.12 on
# x86-64 Linux (typing-extensions too: pydantic needs a recent one, whatever the image has). About 9 MB: small
# enough to travel with the working tree.
#
#   bash benchmarks/gpu_wheelhouse.sh [DIR]      # DIR defaults to .whl (git-ignored)
#   python3 benchmarks/gpu.py --wheelhouse DIR   # there: installs them into its work folder first
set -euo pipefail
dir="${1:-.whl}"
python="${PYTHON:-python3}"
packages=(fastapi starlette uvicorn pydantic pydantic-core pydantic-settings python-dotenv typing-inspection
          annotated-types annotated-doc fastapi-offline sqlalchemy greenlet alembic mako typing-extensions)
pins=()
for name in "${packages[@]}"; do
    version=$("$python" -c "from importlib import metadata; print(metadata.version('$name'))") || {
        echo "gpu_wheelhouse: $name is not installed here; pip install 'rewardserve[server]' first" >&2; exit 1; }
    pins+=("$name==$version")
done
mkdir -p "$dir"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dir" "${pins[@]}"
echo "gpu_wheelhouse: $(ls "$dir"/*.whl | wc -l) wheels, $(du -sh "$dir" | cut -f1) in $dir"
