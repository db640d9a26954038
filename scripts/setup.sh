#!/usr/bin/env bash
# One-command setup (called by `make setup`): Debian packages, the venv with the
# pinned requirements, neural_mapping_interfaces built into the venv, and this
# package installed editable with its executables where `ros2 run` looks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# --- Debian packages ---------------------------------------------------------
APT_PKGS="libusb-1.0-0 libgomp1 cmake g++ make"
missing=""
for p in $APT_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing Debian packages:$missing"
    echo "[setup] run: sudo apt-get install -y$missing"
    exit 1
  fi
fi

# --- the viewer's browser test (tests/test_viewer_browser.py): only as root, else it is skipped --
if [ "$(id -u)" = 0 ] && ! { dpkg -s chromium && dpkg -s chromium-driver; } >/dev/null 2>&1; then
  echo "[setup] apt-get install chromium chromium-driver (the viewer's headless browser test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo "[setup] WARNING: chromium not installed; the viewer's browser test will be skipped"
fi

# --- venv + requirements -----------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PREFIX="$(cd "$VENV" && pwd)"
if [ ! -f "$VENV/.req-stamp" ] || [ requirements.txt -nt "$VENV/.req-stamp" ]; then
  echo "[setup] pip install -r requirements.txt (a few minutes the first time)"
  "$PY" -m pip install -q --disable-pip-version-check -r requirements.txt
  touch "$VENV/.req-stamp"
fi

# --- Triton (optional, ~290 MB download, ~1 GB installed): tests/test_hashgrid_triton.py runs the fused GPU
# kernels through Triton's CPU interpreter; without it those tests are skipped. Same as `pip install .[gpu]`.
TRITON_PIN="triton==3.9.0"
if [ "${NEURAL_MAPPING_SKIP_TRITON:-0}" = 0 ] && [ "$(cat "$VENV/.triton-stamp" 2>/dev/null)" != "$TRITON_PIN" ]; then
  echo "[setup] pip install $TRITON_PIN (the GPU kernels' interpreter tests)"
  if "$PY" -m pip install -q --disable-pip-version-check "$TRITON_PIN"; then
    echo "$TRITON_PIN" >"$VENV/.triton-stamp"
  else
    echo "[setup] WARNING: $TRITON_PIN not installed; tests/test_hashgrid_triton.py will be skipped"
  fi
fi

# --- Ray (optional extra, same as `pip install .[ray]`): `neural-mapping map --submaps --workers N` and its
# tests (skipped without it).
RAY_PIN="ray==2.60.0"
if [ "${NEURAL_MAPPING_SKIP_RAY:-0}" = 0 ] && [ "$(cat "$VENV/.ray-stamp" 2>/dev/null)" != "$RAY_PIN" ]; then
  echo "[setup] pip install $RAY_PIN (offline submap training on Ray workers)"
  if "$PY" -m pip install -q --disable-pip-version-check "$RAY_PIN"; then
    echo "$RAY_PIN" >"$VENV/.ray-stamp"
  else
    echo "[setup] WARNING: $RAY_PIN not installed; the Ray tests will be skipped"
  fi
fi

# --- neural_mapping_interfaces -----------------------------------------------
if [ ! -f "$VENV/.ifc-stamp" ] || [ -n "$(find neural_mapping_interfaces -newer "$VENV/.ifc-stamp" -type f | head -1)" ]; then
  echo "[setup] building neural_mapping_interfaces into $VENV"
  # The rosidl wheels hard-code the include paths of their build machine.
  PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  # (|| true: once rewritten nothing matches, and grep's status 1 would end the script under pipefail)
  { grep -rl --include='*_rosidl_generator_pyExport*.cmake' -e '/opt/python/' "$PREFIX/share" 2>/dev/null || true; } | while read -r f; do
    sed -i -E "s#/opt/python/cp311-cp311/include/python3\.11#${PY_INC}#g; s#[^;\"]*/numpy/(_core|core)/include#${NP_INC}#g" "$f"
  done
  BUILD="$VENV/build/neural_mapping_interfaces"
  rm -rf "$BUILD"; mkdir -p "$BUILD"
  (
    export AMENT_PREFIX_PATH="$PREFIX"
    export PATH="$PREFIX/bin:$PATH"
    cmake -S neural_mapping_interfaces -B "$BUILD" -DCMAKE_PREFIX_PATH="$PREFIX" \
      -DCMAKE_INSTALL_PREFIX="$PREFIX" -DPython3_EXECUTABLE="$PREFIX/bin/python" \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$BUILD.log" 2>&1 &&
    cmake --build "$BUILD" -j"$(nproc)" >>"$BUILD.log" 2>&1 &&
    cmake --install "$BUILD" >>"$BUILD.log" 2>&1
  ) || { echo "[setup] interface build failed; see $BUILD.log"; tail -30 "$BUILD.log"; exit 1; }
  "$PY" -c "from neural_mapping_interfaces.srv import QueryField" \
    || { echo "[setup] built interfaces do not import"; exit 1; }
  touch "$VENV/.ifc-stamp"
fi

# --- this package ------------------------------------------------------------
if [ ! -f "$VENV/.pkg-stamp" ] || [ setup.py -nt "$VENV/.pkg-stamp" ] || [ setup.cfg -nt "$VENV/.pkg-stamp" ] || [ package.xml -nt "$VENV/.pkg-stamp" ]; then
  echo "[setup] pip install -e . (neural_mapping)"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$VENV/.pkg-stamp"
fi
# --- fused hash-grid CPU kernel (optional: if it cannot build, pure PyTorch is used) ---
if [ ! -f "$VENV/.ext-stamp" ] || [ neural_mapping/csrc/hashgrid.cpp -nt "$VENV/.ext-stamp" ] || [ neural_mapping/hashgrid_ext.py -nt "$VENV/.ext-stamp" ]; then
  echo "[setup] compiling the hash-grid CPU kernel (about a minute, once)"
  if "$PY" -c "import sys; from neural_mapping import hashgrid_ext as h; sys.exit(h.load() is None)"; then
    touch "$VENV/.ext-stamp"
  else
    echo "[setup] WARNING: hash-grid CPU kernel not built; the pure-PyTorch path will be used"
  fi
fi
# Where `ros2 run` / launch look for executables, and the ament index entry.
mkdir -p "$PREFIX/lib/neural_mapping" "$PREFIX/share/ament_index/resource_index/packages" "$PREFIX/share/neural_mapping"
for exe in mapper_node map_server neural-mapping; do
  ln -sf "$PREFIX/bin/$exe" "$PREFIX/lib/neural_mapping/$exe"
done
touch "$PREFIX/share/ament_index/resource_index/packages/neural_mapping"
# share/neural_mapping/{launch,config} are real directories holding one link per file, as colcon's
# --symlink-install lays them out: ros2launch finds a launch file by os.walk of the share directory,
# which does not follow directory links (so a linked launch/ directory made the file unfindable).
for d in launch config; do
  dst="$PREFIX/share/neural_mapping/$d"
  { [ -L "$dst" ] || [ -f "$dst" ]; } && rm -f "$dst"  # a directory link left by an older setup
  mkdir -p "$dst"
  find "$dst" -maxdepth 1 -type l ! -exec test -e {} \; -delete  # links to files that are gone
  for f in "$(pwd)/$d"/*; do
    [ -f "$f" ] && ln -sfn "$f" "$dst/$(basename "$f")"
  done
done
ln -sf "$(pwd)/package.xml" "$PREFIX/share/neural_mapping/package.xml"
# The ros2 CLI (from a ROS install, or built from source) finds packages through AMENT_PREFIX_PATH:
# activating the venv puts its prefix there.
if ! grep -q "neural_mapping: AMENT_PREFIX_PATH" "$VENV/bin/activate"; then
  cat >>"$VENV/bin/activate" <<'ACT'
# neural_mapping: AMENT_PREFIX_PATH, so the ros2 CLI finds this venv's packages (neural_mapping, its interfaces)
case ":${AMENT_PREFIX_PATH:-}:" in
  *":$VIRTUAL_ENV:"*) ;;
  *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
ACT
fi
echo "[setup] ready: $VENV (activate with: source $VENV/bin/activate)"
