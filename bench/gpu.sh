#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md in one script, rush and its PyTorch reference back to back on one GPU, printing one
# table at the end:
#   - training steps on inputs already on the GPU (`rush bench train`, each row runs rush then PyTorch eager):
#     ResNet-18 and ResNet-50, fp32 and bf16, 128 px, batch 256, plus torch.compile for ResNet-50 bf16 (11,600 img/s),
#     and each of the trainer's speed changes turned off alone, bf16 (`--ablation`);
#   - end-to-end epochs on synthetic 370x320 sticker PNGs (`rush bench epoch`: rush with its decoded-image cache and
#     device-resident data vs a PyTorch DataLoader + PIL pipeline with one worker per core): ResNet-50 and ResNet-18
#     bf16 at 128 px, first epoch and the later one (goals 9,000 and 25,000 img/s after the first epoch);
#   - scoring 138,343 synthetic test stickers with a 5-model ResNet-50 ensemble through a real daemon, `rush submit`
#     until the board lists it (`rush bench score`, goal <= 60 s);
#   - dashboard rows need no GPU but run here too when RUSH_BENCH_CPU=1 (ingest, sessions page).
# Each run is under `timeout`, so the whole script stays within about 5 minutes on an H200; a run that times out or
# fails prints a row saying so.
#
# Usage (from the repository root, after `cargo build --release --bins`):
#   bench/gpu.sh [path/to/rush]       # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
#                                     (rush-train, which rush execs for the training rows, lies beside it)
# Environment: RUSH_PYTHON (a python with torch and pillow; set by `scripts/setup.sh --env`, or the GPU machine's
# /opt/torch/.venv/bin/python), STEPS (default 50), WARMUP (warm-up steps, default 10), PER_RUN (seconds per step run,
# default 40), IMAGES (stickers for the epoch rows, default 100000), REF_IMAGES (stickers per reference epoch, default
# 30000), EPOCH_RUN (seconds per epoch run, default 120), DATA (a folder for the synthetic stickers, default a temp
# folder, removed at the end), SCORE_RUN (seconds for the score run, default 200), LOG (the file collecting every
# run's stderr, default a temp file).
# The same script runs on the CPU at toy sizes (tests/it/speed.rs does): DEVICE (default cuda), COMPILE=0 (skip the
# torch.compile row), ABLATION=0 (skip `rush bench train --ablation`: each trainer speed change turned off alone), MODELS (default "resnet18 resnet50": the step rows run each in each of PRECISIONS, default
# "fp32 bf16"; the epoch rows run each, last first; torch.compile uses the last), SIZE (default 128), BATCH (default
# 256), SCORE_MODEL (default resnet50), SCORE_SIZE (default 128), SCORE_TEST (default 138343), SCORE_MEMBERS
# (default 5), e.g.
#   DEVICE=cpu COMPILE=0 MODELS="baseline_cnn resnet18" SIZE=32 BATCH=16 STEPS=2 WARMUP=1 IMAGES=200 REF_IMAGES=100 \
#     SCORE_MODEL=baseline_cnn SCORE_SIZE=32 SCORE_TEST=200 SCORE_MEMBERS=3 bench/gpu.sh
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
EPOCH_RUN="${EPOCH_RUN:-120}"
WARMUP="${WARMUP:-10}"
DEVICE="${DEVICE:-cuda}"
COMPILE="${COMPILE:-1}"
ABLATION="${ABLATION:-1}"
# Which parts run; split them over two calls where one command may run 10 minutes at most (the lent H200's limit),
# e.g. PARTS="steps ablation compile" then PARTS="epochs score": with the default limits each half's worst case
# (every run hitting its limit, plus the 10 s grace of each) is 510 s and 560 s, and every run prints its rows on
# stderr as it ends.
PARTS="${PARTS:-steps ablation compile epochs score}"
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
MODELS="${MODELS:-resnet18 resnet50}"
PRECISIONS="${PRECISIONS:-fp32 bf16}"
SIZE="${SIZE:-128}"
BATCH="${BATCH:-256}"
SCORE_RUN="${SCORE_RUN:-200}"
SCORE_MODEL="${SCORE_MODEL:-resnet50}"
SCORE_SIZE="${SCORE_SIZE:-128}"
SCORE_TEST="${SCORE_TEST:-138343}"
SCORE_MEMBERS="${SCORE_MEMBERS:-5}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release --bins first)" >&2; exit 2; }
# `rush train|infer|doctor` and `rush bench train|epoch` run in rush-train, which must lie beside rush.
[ -x "$(dirname "$RUSH")/rush-train" ] || { echo "no rush-train beside $RUSH (cargo build --release --bins)" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ), $DEVICE, steps $STEPS"

rows=()
header=""
LOG="${LOG:-$(mktemp)}"  # every run's stderr; the tail of a failed run's is printed
echo "stderr of every run: $LOG"
failed() { echo "--- $1 failed or timed out; its last lines:" >&2; tail -n 8 "$LOG" >&2; }
# label, seconds, then rush arguments: the run's table rows (all of them, or a row saying it failed or timed out)
run() {
  local label="$1" limit="$2"; shift 2
  local out rc started=$SECONDS before=${#rows[@]}
  out="$(timeout --kill-after=10 "$limit" "$RUSH" "$@" 2>>"$LOG")"
  rc=$?
  if [ $rc -eq 0 ]; then
    [ -n "$header" ] || header="$(printf '%s\n' "$out" | grep '^|' | head -2)"
    while IFS= read -r row; do rows+=("$row"); done < <(printf '%s\n' "$out" | grep '^|' | tail -n +3)
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    failed "$label"; rows+=("| $label | timed out after ${limit}s | | | | NO |")
  else
    failed "$label"; rows+=("| $label | failed (exit $rc) | | | | NO |")
  fi
  # Each run's rows at once, on stderr: a caller's own time limit that cuts the script short keeps what was measured.
  echo "[gpu.sh] $label: $((SECONDS - started)) s" >&2
  for row in "${rows[@]:$before}"; do echo "[gpu.sh] $row" >&2; done
}
bench() { # label, then rush bench train arguments
  local label="$1"; shift
  run "$label" "$PER_RUN" bench train --device "$DEVICE" --size "$SIZE" --batch "$BATCH" --steps "$STEPS" \
    --warmup "$WARMUP" "$@"
}
epoch() { # label, then rush bench epoch arguments; two rows (first epoch, later epochs)
  local label="$1"; shift
  run "$label" "$EPOCH_RUN" bench epoch --device "$DEVICE" --dataset "$DATA" --size "$SIZE" --batch "$BATCH" \
    --epochs 2 --reference-images "$REF_IMAGES" "$@"
}

for model in $MODELS; do
  if has steps; then
    for precision in $PRECISIONS; do bench "$model $precision" --model "$model" --precision "$precision"; done
  fi
  last="$model"
done
if [ "$ABLATION" != 0 ] && has ablation; then
  # Each trainer speed change turned off alone (flat-buffer update, loss read once per window, channels-last).
  for model in $MODELS; do
    PER_RUN=$((PER_RUN * 2)) bench "$model bf16 trainer ablation" --model "$model" --precision bf16 --ablation \
      --no-reference
  done
fi
if [ "$COMPILE" != 0 ] && has compile; then
  PER_RUN=$((PER_RUN * 3)) bench "$last bf16 vs torch.compile" --model "$last" --precision bf16 --compile
fi

if has epochs; then
  if [ -z "${DATA:-}" ]; then
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    DATA="$scratch/stickers"
  fi
  if [ ! -f "$DATA/train/train_data/train_with_valid_tags.csv" ]; then
    start=$(date +%s)
    timeout 90 "$RUSH" dataset synth --out "$DATA" --train "$IMAGES" --test 0 --valid-fraction 0.02 --quiet \
      || echo "synth of $IMAGES stickers failed or timed out" >&2
    echo "synthesised $IMAGES stickers in $(( $(date +%s) - start )) s"
  fi
  for model in $(printf '%s\n' $MODELS | tac); do
    epoch "epoch $model bf16" --model "$model" --precision bf16
  done
fi
if has score; then
  run "score $SCORE_TEST test stickers, $SCORE_MEMBERS x $SCORE_MODEL" "$SCORE_RUN" bench score --device "$DEVICE" \
    --model "$SCORE_MODEL" --size "$SCORE_SIZE" --test "$SCORE_TEST" --members "$SCORE_MEMBERS"
fi
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
echo "(resnet50) and >= 25,000 img/s (resnet18); the epoch rows' ratio is rush vs the PyTorch DataLoader pipeline;"
echo "scoring 138,343 test stickers with 5 x resnet50 <= 60 s"
