#!/usr/bin/env bash
# The main job (README, line 1): set up, build, build the emoji dataset (cached), start the daemon, register the
# dataset, queue the demo experiment, print the dashboard URL, and keep running until Ctrl-C.
#
#   ./scripts/demo.sh            run until Ctrl-C
#   ./scripts/demo.sh --smoke    stop once the first epoch is recorded and the dashboard answered (CI uses this)
#
# Environment: RUSH_HOME (default ./.rush), RUSH_PORT (default 8470), RUSH_CACHE (default ~/.cache/rush).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1

eval "$(scripts/setup.sh --env)"
cargo build --release --bins
rush="$CARGO_TARGET_DIR/release/rush"
export RUSH_HOME="${RUSH_HOME:-$PWD/.rush}"
port="${RUSH_PORT:-8470}"
cache="${RUSH_CACHE:-$HOME/.cache/rush}"
data="$cache/datasets/emoji-128"
t0=$(date +%s)

say() { echo "[demo] $*" >&2; }

if [ ! -f "$data/.complete" ]; then
  say "building the emoji dataset into $data (once)"
  rm -rf "$data"
  "$rush" dataset build emoji --out "$data" --size 128
  touch "$data/.complete"
fi
t_data=$(date +%s)

mkdir -p "$RUSH_HOME" experiments
"$rush" daemon --bind "127.0.0.1:$port" --experiments experiments >>"$RUSH_HOME/daemon.log" 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/api/info" >/dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { say "the daemon exited; its log:"; tail -20 "$RUSH_HOME/daemon.log" >&2; exit 1; }
  sleep 0.2
done

if ! "$rush" dataset ls -j | grep -q '"name": *"emoji"'; then
  say "registering the dataset as emoji"
  "$rush" dataset push emoji "$data"
fi

spec=examples/cpu-demo.yaml
if "$rush" doctor -j | grep -q '"cuda_available": *true'; then spec=examples/gpu-resnet50.yaml; fi
cp "$spec" experiments/demo.yaml
say "queued $spec as experiments/demo.yaml"
say "dashboard: http://127.0.0.1:$port/"
"$rush" ps -a

if [ "$smoke" = 1 ]; then
  say "smoke run: waiting for the first epoch"
  for _ in $(seq 900); do
    if curl -fsS "http://127.0.0.1:$port/api/sessions?all=true" | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if any((x.get("epoch") or 0) >= 1 for x in s) else 1)'; then
      "$rush" ps -a
      say "first epoch recorded $(( $(date +%s) - t_data ))s after the dataset was ready ($(( t_data - t0 ))s to build/find it); the daemon answered over HTTP"
      exit 0
    fi
    kill -0 $daemon 2>/dev/null || { say "the daemon exited"; tail -20 "$RUSH_HOME/daemon.log" >&2; exit 1; }
    sleep 1
  done
  say "no epoch within 15 minutes"; exit 1
fi
say "training; Ctrl-C stops the daemon (sessions resume next time)"
wait $daemon
