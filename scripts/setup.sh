#!/usr/bin/env bash
# Installs everything rush needs to build and run, idempotently, into a cache outside the clone.
#   RUSH_CACHE (default ~/.cache/rush) holds, keyed by version:
#     torch-2.11.0/venv   python venv with torch==2.11.0 (libtorch for tch 0.24), safetensors, numpy, pillow,
#                         jsonschema (checks `rush spec schema` against the hostile spec corpus), and what code
#                         sessions' AI RUSH code imports: torchvision==0.26.0 (matching torch), pandas, tqdm; plus uv
#                         (builds a code session's requirements.txt environment)
#     target/             the cargo target dir shared by clones (torch-sys compiles once)
#     npm/                the emoji dataset's pinned npm tarballs (scripts/fetch-npm.sh)
# Prints `export` lines for the environment on stdout when called with --env.
set -euo pipefail

TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
CACHE="${RUSH_CACHE:-$HOME/.cache/rush}"
VENV="$CACHE/torch-$TORCH_VERSION/venv"
PY="${PYTHON:-python3}"

log() { echo "[setup] $*" >&2; }

install_torch() {
  if [ -f "$VENV/.complete" ]; then
    # Venvs made before pillow was added (the `rush bench decode` reference) get it once.
    "$VENV/bin/python" -c "import PIL" 2>/dev/null || "$VENV/bin/python" -m pip install -q pillow >&2
    # Likewise jsonschema (the spec schema test's independent JSON Schema validator).
    "$VENV/bin/python" -c "import jsonschema" 2>/dev/null || "$VENV/bin/python" -m pip install -q jsonschema >&2
    # And what code sessions need (torchvision pinned to the torch it was built for, so torch stays as it is).
    "$VENV/bin/python" -c "import torchvision, pandas, tqdm" 2>/dev/null && [ -x "$VENV/bin/uv" ] ||
      "$VENV/bin/python" -m pip install -q "torchvision==$TORCHVISION_VERSION" pandas tqdm uv >&2
    return
  fi
  log "installing torch==$TORCH_VERSION into $VENV (about 4.7 GB, once)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" safetensors numpy \
    pillow jsonschema pandas tqdm uv >&2
  "$VENV/bin/python" -c "import torch, torchvision, safetensors, numpy, PIL, jsonschema, pandas, tqdm; assert torch.__version__.startswith('$TORCH_VERSION'), torch.__version__" >&2
  touch "$VENV/.complete"
}

# The dashboard's browser test drives Debian's headless Chromium through chromedriver.
install_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return; fi
  log "installing chromium and chromium-driver (Debian packages, for the dashboard's browser test)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
}

# Code sessions run users' Python in a bubblewrap sandbox (Debian's bubblewrap).
install_bubblewrap() {
  if command -v bwrap >/dev/null 2>&1; then return; fi
  log "installing bubblewrap (Debian package, the sandbox of code sessions)"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends bubblewrap >&2
}

install_torch
install_bubblewrap
"$(dirname "$0")/fetch-npm.sh"  # the emoji dataset's pinned npm tarballs -> $CACHE/npm
install_browser
TORCH_DIR="$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"

if [ "${1:-}" = "--env" ]; then
  echo "export LIBTORCH='$TORCH_DIR'"
  echo "export LIBTORCH_BYPASS_VERSION_CHECK=1"
  echo "export LD_LIBRARY_PATH='$TORCH_DIR/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  echo "export CARGO_TARGET_DIR='${CARGO_TARGET_DIR:-$CACHE/target}'"
  echo "export RUSH_PYTHON='$VENV/bin/python'"
  echo "export PATH='$VENV/bin':\"\$PATH\""
fi
