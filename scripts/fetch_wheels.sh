#!/usr/bin/env bash
# Wheels for the GPU machine (docs/gpu.md), downloaded HERE into .whl/ (git-ignored) and carried there.
#
# That machine (Python 3.12, x86_64) has its own CUDA torch, Triton, numpy, scipy, scikit-image, pillow,
# pyyaml, tqdm, pytest and hypothesis, and reaches no registry. Of this package's requirements it lacks:
#   - rosbags (bags: `neural-mapping map BAG`) and its needs apsw, backports.zstd, lz4, ruamel.yaml: ~6 MB,
#     fetched here;
#   - open3d (the synthetic scene's ray casting, mesh files, evaluation): no cp312 wheel under the 64 MiB
#     that travels, so it is not fetched; benchmarks/device_check.sh --prepare renders the scene here instead
#     and the benchmarks use open3d-free paths (MeshExtractor.extract_arrays);
#   - viser (the web viewer): not needed for the check.
# One version of each (two would stop the install there). Usage: bash scripts/fetch_wheels.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WHEELS="rosbags==0.11.9 apsw==3.54.1.0 backports.zstd==1.8.0 lz4==4.4.5 ruamel.yaml==0.19.1"
mkdir -p "$DEST"
for w in $WHEELS; do
  name=${w%%==*}; ver=${w#*==}
  stem=$(echo "$name" | tr '.-' '__')
  if compgen -G "$DEST/${stem}-${ver}-*.whl" >/dev/null; then continue; fi
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$w"
done
echo "[fetch_wheels] $DEST: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1)"
