#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one script, rush and its PyTorch reference back to back on one GPU, printing one
# table at the end:
#   - training steps on inputs already on the GPU (`rush bench train`, each row runs rush then PyTorch eager):
#     ResNet-18 and ResNet-50, fp32 and bf16, 128 px, batch 256, plus torch.compile for ResNet-50 bf16 (11,600 img/s);
#   - end-to-end epochs on synthetic 370x320 sticker PNGs (`rush bench epoch`: rush with its decoded-image cache and
#     device-resident data vs a PyTorch DataLoader + PIL pipeline with one worker per core): ResNet-50 and ResNet-18
#     bf16 at 128 px, first epoch and the later one (goals 9,000 and 25,000 img/s after the first epoch);
#   - dashboard rows need no GPU but run here too when RUSH_BENCH_CPU=1 (ingest, sessions page).
# Each run is under `timeout`, so the whole script stays within about 5 minutes on an H200; a run that times out or
# fails prints a row saying so.
#
# Usage (from the repository root, after `cargo build --release`):
#   bench/gpu.sh [path/to/rush]       # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: RUSH_PYTHON (a python with torch and pillow; set by `scripts/setup.sh --env`, or the GPU machine's
# /opt/torch/.venv/bin/python), STEPS (default 50), PER_RUN (seconds per step run, default 40), IMAGES (stickers for
# the epoch rows, default 100000), REF_IMAGES (stickers per reference epoch, default 30000), EPOCH_RUN (seconds per
# epoch run, default 150), DATA (a folder for the synthetic stickers, default a temp folder).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LIBTORCH:-}" ] && [ -z "${RUSH_PYTHON:-}" ] && [ -x scripts/setup.sh ]; then eval "$(scripts/setup.sh --env)"; fi
# The GPU machine: its torch's libraries and python, when nothing else was set.
if [ -d /opt/torch/.venv ]; then
  export LD_LIBRARY_PATH="/opt/torch/.venv/lib/python3.12/site-packages/torch/lib:${LD_LIBRARY_PATH:-}"
  export RUSH_PYTHON="${RUSH_PYTHON:-/opt/torch/.venv/bin/python}"
fi
RUSH="${1:-${CARGO_TARGET_DIR:-target}/release/rush}"
STEPS="${STEPS:-50}"
PER_RUN="${PER_RUN:-40}"
IMAGES="${IMAGES:-100000}"
REF_IMAGES="${REF_IMAGES:-30000}"
EPOCH_RUN="${EPOCH_RUN:-150}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ), steps $STEPS"

rows=()
header=""
LOG="$(mktemp)"  # every run's stderr; the tail of a failed run's is printed
echo "stderr of every run: $LOG"
failed() { echo "--- $1 failed or timed out; its last lines:" >&2; tail -n 8 "$LOG" >&2; }
bench() { # label, then rush bench train arguments
  local label="$1"; shift
  local out rc
  out="$(timeout --kill-after=10 "$PER_RUN" "$RUSH" bench train --device cuda --size 128 --batch 256 \
    --steps "$STEPS" --warmup 10 "$@" 2>>"$LOG")"
  rc=$?
  if [ $rc -eq 0 ]; then
    [ -n "$header" ] || header="$(printf '%s\n' "$out" | grep '^|' | head -2)"
    rows+=("$(printf '%s\n' "$out" | grep '^|' | tail -1)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    failed "$label"; rows+=("| $label | timed out after ${PER_RUN}s | | | | NO |")
  else
    failed "$label"; rows+=("| $label | failed (exit $rc) | | | | NO |")
  fi
}

epoch() { # label, then rush bench epoch arguments; two rows (first epoch, later epochs)
  local label="$1"; shift
  local out rc
  out="$(timeout --kill-after=10 "$EPOCH_RUN" "$RUSH" bench epoch --device cuda --dataset "$DATA" --size 128 \
    --batch 256 --epochs 2 --reference-images "$REF_IMAGES" "$@" 2>>"$LOG")"
  rc=$?
  if [ $rc -eq 0 ]; then
    while IFS= read -r row; do rows+=("$row"); done < <(printf '%s\n' "$out" | grep '^|' | tail -n +3)
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    failed "$label"; rows+=("| $label | timed out after ${EPOCH_RUN}s | | | | NO |")
  else
    failed "$label"; rows+=("| $label | failed (exit $rc) | | | | NO |")
  fi
}

bench "resnet18 fp32" --model resnet18 --precision fp32
bench "resnet18 bf16" --model resnet18 --precision bf16
bench "resnet50 fp32" --model resnet50 --precision fp32
bench "resnet50 bf16" --model resnet50 --precision bf16
PER_RUN=$((PER_RUN * 3)) bench "resnet50 bf16 vs torch.compile" --model resnet50 --precision bf16 --compile

DATA="${DATA:-$(mktemp -d)/stickers}"
if [ ! -f "$DATA/train/train_data/train_with_valid_tags.csv" ]; then
  start=$(date +%s)
  timeout 120 "$RUSH" dataset synth --out "$DATA" --train "$IMAGES" --test 0 --valid-fraction 0.02 --quiet \
    || echo "synth of $IMAGES stickers failed or timed out" >&2
  echo "synthesised $IMAGES stickers in $(( $(date +%s) - start )) s"
fi
epoch "epoch resnet50 bf16" --model resnet50 --precision bf16
epoch "epoch resnet18 bf16" --model resnet18 --precision bf16
if [ "${RUSH_BENCH_CPU:-0}" = 1 ]; then
  for cmd in ingest dashboard; do
    out="$(timeout 300 "$RUSH" bench "$cmd" 2>>"$LOG")" && while IFS= read -r row; do rows+=("$row"); done \
      < <(printf '%s\n' "$out" | grep '^|' | tail -n +3)
  done
fi

echo
[ -n "$header" ] && printf '%s\n' "$header" || printf "| benchmark | rush | reference | ratio | goal | met |\n|---|---|---|---|---|---|\n"
printf '%s\n' "${rows[@]}"
echo "goals: train steps ratio >= 1.0x, resnet50 bf16 >= 11,600 img/s; epochs after the first >= 9,000 img/s"
echo "(resnet50) and >= 25,000 img/s (resnet18); the epoch rows' ratio is rush vs the PyTorch DataLoader pipeline"
