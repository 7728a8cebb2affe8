#!/usr/bin/env bash
# The built-in trainer against the same model as a code session (BENCHMARKS.md, "Code sessions"): rush's baseline_cnn
# with the same recipe (AdamW 0.002, weight decay 0.05, label smoothing 0.1, no augmentation, fp32, batch 64), once
# from a spec and once as `bench/code_twin.py` run through the `nsml` module (a PIL + DataLoader pipeline, in the
# bubblewrap sandbox), on the emoji dataset at SIZE px, one CPU slot. Prints each one's seconds per epoch from epoch 2
# on, training images per second, and the last epoch's validation accuracy (fxemoji, never seen in training).
#
# Usage (from the repository root, after `cargo build --release --bins` and `scripts/setup.sh`):
#   bench/code.sh [path/to/rush]     # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: EPOCHS (default 3), SIZE (32), WORKERS (the twin's DataLoader workers, 1).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSH="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/rush}")"
EPOCHS="${EPOCHS:-3}"
SIZE="${SIZE:-32}"
WORKERS="${WORKERS:-1}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
command -v jq >/dev/null || { echo "bench/code.sh needs jq" >&2; exit 2; }
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
export RUSH_HOME="$tmp/home"
mkdir -p "$RUSH_HOME/exp" "$tmp/twin"
"$RUSH" dataset build emoji --out "$tmp/emoji" --size "$SIZE" --threads 2 --quiet
"$RUSH" dataset push emoji "$tmp/emoji" >/dev/null
OMP_NUM_THREADS="$(nproc)" "$RUSH" daemon --bind 127.0.0.1:0 --user bench --cpu-slots 1 \
  --experiments "$RUSH_HOME/exp" >>"$tmp/daemon.log" 2>&1 &
pid=$!
until [ -s "$RUSH_HOME/daemon.addr" ]; do sleep 0.1; done
url="http://$(cat "$RUSH_HOME/daemon.addr")/api"

wait_done() {
  while :; do
    state="$("$RUSH" ps -a -j | jq -r --arg id "$1" '.[] | select(.id == $id) | .state')"
    case "$state" in succeeded) return ;; failed|stopped) echo "$1 $state:" >&2; "$RUSH" logs "$1" | tail -20 >&2; exit 1 ;; esac
    kill -0 "$pid" 2>/dev/null || { echo "the daemon exited; its log:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 1
  done
}
# "seconds per epoch from epoch 2 on, images per second, last val acc" of a session, from metric $2 (epoch seconds)
# and $3 (its images per epoch, or a number).
figures() {
  local secs acc
  secs="$(curl -fsS "$url/sessions/$1/metrics?name=$2" | jq '[.[] | select(.epoch >= 2) | .value] | add / length')"
  acc="$(curl -fsS "$url/sessions/$1/metrics?name=val_acc" | jq 'max_by(.step) | .value')"
  echo "$secs $(echo "$3 / $secs" | bc -l) $acc"
}

cat >"$RUSH_HOME/exp/builtin.yaml" <<EOF
dataset: emoji
model: baseline_cnn
image_size: $SIZE
batch_size: 64
epochs: $EPOCHS
precision: fp32
optimizer: {name: adamw, lr: 0.002, weight_decay: 0.05}
schedule: {name: constant, warmup_epochs: 0}
loss: {name: cross_entropy, label_smoothing: 0.1}
augment: {random_resized_crop: null, hflip: false, color_jitter: 0}
resources: {gpus: 0}
seed: 0
EOF
until builtin="$("$RUSH" ps -a -j | jq -re '.[0].id')"; do sleep 0.2; done
wait_done "$builtin"
# Where the CPU computes bf16 natively (AMX, AVX512-BF16), also the built-in trainer's bf16 autocast: a choice the
# code session does not get for free.
bf16=""
if grep -q -m1 'amx_bf16\|avx512_bf16' /proc/cpuinfo; then
  sed 's/^precision: fp32$/precision: bf16/' "$RUSH_HOME/exp/builtin.yaml" >"$RUSH_HOME/exp/.bf16.tmp"
  mv "$RUSH_HOME/exp/.bf16.tmp" "$RUSH_HOME/exp/builtin-bf16.yaml"
  until bf16="$("$RUSH" ps -a -j | jq -re --arg b "$builtin" '[.[] | select(.id != $b)][0].id')"; do sleep 0.2; done
  wait_done "$bf16"
fi
train_images="$(jq -r 'select(.event == "started") | .train_size' "$RUSH_HOME/sessions/$builtin/events.jsonl" | head -1)"

cp bench/code_twin.py "$tmp/twin/main.py"
cp bench/torch_train_step.py "$tmp/twin/"
code="$(cd "$tmp/twin" && "$RUSH" run -d emoji -a "--epochs $EPOCHS --size $SIZE --batch 64 --workers $WORKERS")"
wait_done "$code"
twin_images="$(curl -fsS "$url/sessions/$code/metrics?name=images" | jq 'max_by(.step) | .value')"

read -r b_secs b_ips b_acc < <(figures "$builtin" epoch_seconds "$train_images")
read -r c_secs c_ips c_acc < <(figures "$code" epoch_seconds "$twin_images")
echo "$("$RUSH" --version | head -1), emoji at $SIZE px, baseline_cnn, $EPOCHS epochs, one CPU slot on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo
echo "| trainer | s/epoch (epochs 2-$EPOCHS) | train img/s | val acc, epoch $EPOCHS (fxemoji) |"
echo "|---|---|---|---|"
printf '| built-in (`rush train`) | %.1f | %.0f | %.3f |\n' "$b_secs" "$b_ips" "$b_acc"
if [ -n "$bf16" ]; then
  read -r f_secs f_ips f_acc < <(figures "$bf16" epoch_seconds "$train_images")
  printf '| built-in, `precision: bf16` (native bf16 CPU) | %.1f | %.0f | %.3f |\n' "$f_secs" "$f_ips" "$f_acc"
fi
printf '| code session (nsml, PIL DataLoader, %s worker) | %.1f | %.0f | %.3f |\n' "$WORKERS" "$c_secs" "$c_ips" "$c_acc"
