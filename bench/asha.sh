#!/usr/bin/env bash
# ASHA against the full grid (BENCHMARKS.md, "ASHA sweeps"): the same 9-point grid over learning rates, once as a
# plain sweep and once with `searcher: {name: asha, grace_epochs: 1, reduction_factor: 3}`, on the emoji dataset (its
# validation style, fxemoji, never seen in training). Prints the epochs each spent, its wall time and the best
# validation accuracy it found, and which learning rate found it.
#
# Usage (from the repository root, after `cargo build --release` and `scripts/setup.sh`):
#   bench/asha.sh [path/to/rush]     # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: EPOCHS (default 9: rungs at 1 and 3), MODEL (baseline_cnn), SIZE (image side, 32), SLOTS (CPU slots, 2).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSH="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/rush}")"
EPOCHS="${EPOCHS:-9}"
MODEL="${MODEL:-baseline_cnn}"
SIZE="${SIZE:-32}"
SLOTS="${SLOTS:-2}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
command -v jq >/dev/null || { echo "bench/asha.sh needs jq" >&2; exit 2; }
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
export RUSH_HOME="$tmp/home"
mkdir -p "$RUSH_HOME/exp"
"$RUSH" dataset build emoji --out "$tmp/emoji" --size "$SIZE" --threads 2 --quiet
"$RUSH" dataset push emoji "$tmp/emoji" >/dev/null
OMP_NUM_THREADS=1 "$RUSH" daemon --bind 127.0.0.1:0 --user bench --cpu-slots "$SLOTS" --experiments "$RUSH_HOME/exp" \
  >>"$tmp/daemon.log" 2>&1 &
pid=$!
until [ -s "$RUSH_HOME/daemon.addr" ]; do sleep 0.1; done

grid="grid: {optimizer.lr: [0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001, 0.00003, 0.00001, 0.000003]}"
# Runs one sweep ($1, with the spec lines $2) until $3 sessions exist and none is active; sums the epochs of the
# sessions numbered above $4. Prints "epochs seconds best_val_acc best_lr states".
sweep() {
  local name="$1" extra="$2" t0 ids
  cat >"$RUSH_HOME/exp/.$name.tmp" <<EOF
dataset: emoji
model: $MODEL
image_size: $SIZE
batch_size: 64
epochs: $EPOCHS
precision: fp32
optimizer: {name: adamw}
schedule: {name: cosine, warmup_epochs: 0}
seed: 1
checkpoints: {keep_best: 1, keep_last: true}
$grid
$extra
EOF
  t0="$(date +%s.%N)"
  mv "$RUSH_HOME/exp/.$name.tmp" "$RUSH_HOME/exp/$name.yaml"
  while :; do
    ids="$("$RUSH" ps -a -j)"
    active="$(echo "$ids" | jq '[.[] | select(.state == "queued" or .state == "running" or .state == "waiting")] | length')"
    [ "$active" = 0 ] && [ "$(echo "$ids" | jq 'length')" -ge "$3" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "the daemon exited; its log:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 1
  done
  local secs
  secs="$(echo "$(date +%s.%N) - $t0" | bc)"
  echo "$ids" | jq -r --arg secs "$secs" --argjson from "$4" '
    [.[] | select((.id | split("/") | .[2] | tonumber) > $from)] as $s
    | ($s | map(.epoch // 0) | add) as $epochs
    | ($s | max_by(.best_val_acc // 0)) as $best
    | "\($epochs) \($secs) \($best.best_val_acc) \($best.spec.optimizer.lr) \($s | map(.state) | group_by(.) | map("\(length) \(.[0])") | join(", "))"'
}
read -r full_epochs full_secs full_best full_lr full_states < <(sweep full "" 9 0)
read -r asha_epochs asha_secs asha_best asha_lr asha_states < <(sweep asha \
  "searcher: {name: asha, metric: val_acc, grace_epochs: 1, reduction_factor: 3, max_concurrent: $SLOTS}" 18 9)
echo "$("$RUSH" --version | head -1), emoji at $SIZE px, $MODEL, $EPOCHS epochs, 9 learning rates, $SLOTS CPU slots on $(nproc) cores"
echo
echo "| sweep | epochs trained | wall time | best val acc (fxemoji) | its lr | trials |"
echo "|---|---|---|---|---|---|"
printf '| full grid | %s | %.0f s | %.3f | %s | %s |\n' "$full_epochs" "$full_secs" "$full_best" "$full_lr" "$full_states"
printf '| ASHA (grace 1, rf 3) | %s | %.0f s | %.3f | %s | %s |\n' "$asha_epochs" "$asha_secs" "$asha_best" "$asha_lr" "$asha_states"
