#!/usr/bin/env bash
# The daemon's start-up with a dataset to register (BENCHMARKS.md, "Start-up"): synthesises N training stickers (and
# N/5 test stickers, 48 px), pushes them into a fresh home while no daemon runs, then starts `rush daemon` and times
# how long it takes until `/api/info` answers and until the dataset is registered (`/api/datasets` lists its images);
# then stops it, starts it again (nothing left to register) and times `/api/info` once more. Best of RUNS (default 3)
# fresh homes; the synthetic folder is made once.
#
# Usage (from the repository root, after `cargo build --release`):
#   bench/startup.sh [path/to/rush]     # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: N (default 20000), RUNS (default 3), DATA (a folder for the synthetic stickers, default a temp folder).
set -euo pipefail
cd "$(dirname "$0")/.."
RUSH="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/rush}")"
N="${N:-20000}"
RUNS="${RUNS:-3}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
command -v curl >/dev/null || { echo "bench/startup.sh needs curl" >&2; exit 2; }
tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
data="${DATA:-$tmp/stickers}"
[ -d "$data/train" ] || "$RUSH" dataset synth --out "$data" --train "$N" --test $((N / 5)) --width 48 --height 48 --quiet

now() { date +%s.%N; }
# Starts the daemon on HOME; sets $secs (seconds until /api/info answers) and $pid.
start() {
  local home="$1" t0 addr addr_file="$1/daemon.addr"
  rm -f "$addr_file"
  t0="$(now)"
  RUSH_HOME="$home" "$RUSH" daemon --bind 127.0.0.1:0 --user bench --cpu-slots 1 --experiments "$home/exp" \
    >>"$tmp/daemon.log" 2>&1 &
  pid=$!
  while :; do
    if [ -s "$addr_file" ] && addr="$(cat "$addr_file")" && curl -sf "http://$addr/api/info" >/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { echo "the daemon exited; its log:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.01
  done
  secs="$(echo "$(now) - $t0" | bc)"
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }
registered() { curl -sf "http://$(cat "$1/daemon.addr")/api/datasets" | grep -q '"train_images":'"$N"; }

best() { sort -g | head -1; }
info_first=() reg=() info_again=()
for run in $(seq "$RUNS"); do
  home="$tmp/home-$run"
  mkdir -p "$home/exp"
  RUSH_HOME="$home" "$RUSH" dataset push big "$data" >/dev/null
  t0="$(now)"
  start "$home"
  info_first+=("$secs")
  until registered "$home"; do sleep 0.01; done
  reg+=("$(echo "$(now) - $t0" | bc)")
  stop
  start "$home"
  info_again+=("$secs")
  stop
done
fmt() { printf '%.2f s' "$1"; }
echo "$("$RUSH" --version | head -1), N = $N training + $((N / 5)) test stickers, best of $RUNS, $(nproc) cores"
echo
echo "| start-up | seconds |"
echo "|---|---|"
echo "| start until /api/info answers, a dataset to register | $(fmt "$(printf '%s\n' "${info_first[@]}" | best)") |"
echo "| start until the dataset is registered | $(fmt "$(printf '%s\n' "${reg[@]}" | best)") |"
echo "| start until /api/info answers, nothing to register | $(fmt "$(printf '%s\n' "${info_again[@]}" | best)") |"
