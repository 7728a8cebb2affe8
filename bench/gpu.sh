#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md, rush and the PyTorch eager reference back to back on one GPU (each `rush bench train`
# runs both sides and prints one table row): ResNet-18 and ResNet-50, fp32 and bf16, 128 px, batch 256, plus the
# torch.compile reference for ResNet-50 bf16 (issue 7's 11,600 img/s). Each run is under `timeout`, so the whole
# script stays within about 5 minutes on an H200; a run that times out or fails prints a row saying so.
#
# Usage (from the repository root, after `cargo build --release`):
#   bench/gpu.sh [path/to/rush]       # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: RUSH_PYTHON (a python with torch; set by `scripts/setup.sh --env`), STEPS (default 50),
# PER_RUN (seconds per run, default 40).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LIBTORCH:-}" ] && [ -x scripts/setup.sh ]; then eval "$(scripts/setup.sh --env)"; fi
RUSH="${1:-${CARGO_TARGET_DIR:-target}/release/rush}"
STEPS="${STEPS:-50}"
PER_RUN="${PER_RUN:-40}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ), steps $STEPS"

rows=()
header=""
bench() { # label, then rush bench train arguments
  local label="$1"; shift
  local out rc
  out="$(timeout --kill-after=10 "$PER_RUN" "$RUSH" bench train --device cuda --size 128 --batch 256 \
    --steps "$STEPS" --warmup 10 "$@" 2>/dev/null)"
  rc=$?
  if [ $rc -eq 0 ]; then
    [ -n "$header" ] || header="$(printf '%s\n' "$out" | grep '^|' | head -2)"
    rows+=("$(printf '%s\n' "$out" | grep '^|' | tail -1)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    rows+=("| $label | timed out after ${PER_RUN}s | | | | NO |")
  else
    rows+=("| $label | failed (exit $rc) | | | | NO |")
  fi
}

bench "resnet18 fp32" --model resnet18 --precision fp32
bench "resnet18 bf16" --model resnet18 --precision bf16
bench "resnet50 fp32" --model resnet50 --precision fp32
bench "resnet50 bf16" --model resnet50 --precision bf16
PER_RUN=$((PER_RUN * 3)) bench "resnet50 bf16 vs torch.compile" --model resnet50 --precision bf16 --compile

echo
[ -n "$header" ] && printf '%s\n' "$header" || printf "| benchmark | rush | reference | ratio | goal | met |\n|---|---|---|---|---|---|\n"
printf '%s\n' "${rows[@]}"
echo "goals: ratio >= 1.0x for every row; resnet50 bf16 >= 11,600 img/s"
