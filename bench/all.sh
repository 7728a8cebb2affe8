#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md from one command: the CPU rows here (decode, train step, epoch, ingest, dashboard,
# re-ensembling, spec-to-start, scoring a 5-member ensemble; sized to take a minute or two each on a 2-core machine),
# then, when a GPU is visible, bench/gpu.sh (the GPU rows, rush and the PyTorch references back to back). Prints one
# Markdown table at the end.
#
# Usage (from the repository root, after `cargo build --release --bins`):
#   bench/all.sh [path/to/rush]       # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: RUSH_PYTHON (a python with torch and pillow; `scripts/setup.sh --env` sets it), GPU=0 to skip the GPU
# rows, CPU_RUN (seconds per CPU benchmark, default 300).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RUSH_PYTHON:-}" ] && [ -x scripts/setup.sh ]; then eval "$(scripts/setup.sh --env)"; fi
RUSH="${1:-${CARGO_TARGET_DIR:-target}/release/rush}"
CPU_RUN="${CPU_RUN:-300}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release --bins first)" >&2; exit 2; }
# `rush train|infer|doctor` and `rush bench train|epoch` run in rush-train, which must lie beside rush.
[ -x "$(dirname "$RUSH")/rush-train" ] || { echo "no rush-train beside $RUSH (cargo build --release --bins)" >&2; exit 2; }
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rows=()
run() { # label, then rush arguments
  local label="$1"; shift
  local out rc
  out="$(timeout --kill-after=10 "$CPU_RUN" "$RUSH" "$@" 2>"$tmp/err")"
  rc=$?
  if [ $rc -eq 0 ]; then
    while IFS= read -r row; do rows+=("$row"); done < <(printf '%s\n' "$out" | grep '^|' | tail -n +3)
  else
    rows+=("| $label | failed or timed out (exit $rc): $(tail -1 "$tmp/err" | tr '|' '/') | | | | NO |")
  fi
}

"$RUSH" dataset synth --out "$tmp/stickers" --train 2000 --test 0 --quiet
run "decode" bench decode --images "$tmp/stickers"
run "train step" bench train --device cpu --model resnet18 --size 64 --batch 32 --steps 10
run "epoch" bench epoch --device cpu --dataset "$tmp/stickers" --workers "$(nproc)"
run "ingest" bench ingest
run "dashboard" bench dashboard
run "ensemble" bench ensemble
run "spec-to-start" bench spec-to-start
run "score" bench score --device cpu

echo
echo "| benchmark | rush | reference | ratio | goal | met |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"

if [ "${GPU:-1}" != 0 ] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo
  bench/gpu.sh "$RUSH"
else
  echo
  echo "GPU rows: not measured (no GPU here); bench/gpu.sh runs them on a GPU machine."
fi
