#!/usr/bin/env bash
# Packs what bench/gpu.sh needs on a GPU machine without Rust or network (such as the lent H200 with torch at
# /opt/torch/.venv): the release binary, into .gpu/ in the repository root, which .git/info/exclude keeps out of git.
# The repository's tracked files (bench/gpu.sh, the reference scripts) travel with the working tree; .gpu/ travels
# when named as carried. On that machine, from the repository root:
#
#   bench/gpu.sh .gpu/rush 2>&1 | tee "$OUT/gpu.log"
#
# Usage: bench/gpu-pack.sh [path/to/rush]   # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
set -euo pipefail
cd "$(dirname "$0")/.."
RUSH="${1:-${CARGO_TARGET_DIR:-target}/release/rush}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
# The binary must find the GPU machine's libtorch by itself: build.rs bakes its RUNPATH in.
if command -v readelf >/dev/null && ! readelf -d "$RUSH" | grep -q "/opt/torch/.venv/lib/python3.12/site-packages/torch/lib"; then
  echo "$RUSH has no RUNPATH to /opt/torch/.venv's libtorch; bench/gpu.sh sets LD_LIBRARY_PATH there anyway" >&2
fi
exclude="$(git rev-parse --git-path info/exclude)"
grep -qxF "/.gpu/" "$exclude" 2>/dev/null || echo "/.gpu/" >>"$exclude"
mkdir -p .gpu
cp "$RUSH" .gpu/rush
strip .gpu/rush 2>/dev/null || true
echo "packed .gpu/rush ($(du -h .gpu/rush | cut -f1)); carry [\".gpu\"] and run: bench/gpu.sh .gpu/rush"
