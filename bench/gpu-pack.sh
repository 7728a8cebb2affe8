#!/usr/bin/env bash
# Packs what bench/gpu.sh and scripts/gpu-accept.sh need on a GPU machine without Rust or network (such as the lent
# H100/H200 with torch at /opt/torch/.venv) into .gpu/ in the repository root, which .git/info/exclude keeps out of
# git: the stripped release binaries (.gpu/rush and .gpu/rush-train, which `rush` execs for train, infer, doctor and
# bench train|epoch: the only one that links libtorch) and the pinned emoji npm tarballs (.gpu/npm/, from
# ${RUSH_CACHE:-~/.cache/rush}/npm, fetched there by scripts/fetch-npm.sh when missing), about 60 MB in all; the run
# tool carries at most 64 MiB, which this script checks. The repository's tracked files (the scripts, the reference
# scripts) travel with the working tree; .gpu/ travels when named as carried. On that machine, from the repository
# root:
#
#   bench/gpu.sh .gpu/rush 2>&1 | tee "$OUT/gpu.log"
#   scripts/gpu-accept.sh .gpu/rush       # finds the tarballs in .gpu/npm, writes its log under $OUT/gpu-accept/
#
# Usage: bench/gpu-pack.sh [path/to/rush]   # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# (rush-train is taken from beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
RUSH="${1:-${CARGO_TARGET_DIR:-target}/release/rush}"
TRAIN="$(dirname "$RUSH")/rush-train"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release --bins first)" >&2; exit 2; }
[ -x "$TRAIN" ] || { echo "no rush-train beside $RUSH (cargo build --release --bins builds both)" >&2; exit 2; }
# rush-train must find the GPU machine's libtorch by itself: trainer/build.rs bakes its RUNPATH in.
if command -v readelf >/dev/null && ! readelf -d "$TRAIN" | grep -q "/opt/torch/.venv/lib/python3.12/site-packages/torch/lib"; then
  echo "$TRAIN has no RUNPATH to /opt/torch/.venv's libtorch; bench/gpu.sh sets LD_LIBRARY_PATH there anyway" >&2
fi
exclude="$(git rev-parse --git-path info/exclude)"
grep -qxF "/.gpu/" "$exclude" 2>/dev/null || echo "/.gpu/" >>"$exclude"
mkdir -p .gpu/npm
cp "$RUSH" .gpu/rush
cp "$TRAIN" .gpu/rush-train
strip .gpu/rush .gpu/rush-train 2>/dev/null || true
# The emoji dataset's inputs (scripts/gpu-accept.sh builds it there): the tarballs recipes/emoji.yaml names.
npm_cache="${RUSH_CACHE:-$HOME/.cache/rush}/npm"
scripts/fetch-npm.sh
rm -f .gpu/npm/*.tgz
cp "$npm_cache"/*.tgz .gpu/npm/
bytes=$(du -sb .gpu | cut -f1)
echo "packed .gpu/rush ($(du -h .gpu/rush | cut -f1)), .gpu/rush-train ($(du -h .gpu/rush-train | cut -f1)) and" \
  "$(ls .gpu/npm | wc -l) emoji tarballs ($(du -sh .gpu/npm | cut -f1)):" \
  "$((bytes >> 20)) MiB in all; carry [\".gpu\"] and run: bench/gpu.sh .gpu/rush, or scripts/gpu-accept.sh .gpu/rush"
if [ "$bytes" -gt $((64 << 20)) ]; then
  echo "more than the 64 MiB the run tool carries" >&2
  exit 1
fi
