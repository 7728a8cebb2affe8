#!/usr/bin/env bash
# The scale table of issue 22 for any N (outside CI; tests/it/scale.rs is the CI slice at N = 20,000): a synthetic
# dataset of N training and N/5 test stickers at 16 px, pushed to a real daemon on a temporary home, then
#   - the daemon's start until /api/info answers, empty and with the dataset registered, and its memory after
#     registration;
#   - a baseline CNN at 32 px for one epoch, its first submission (inference), then the four endpoints that used to
#     read the training CSV on every call (the cache list, the builder page, the builder's mix, ensemble auto), one at a
#     time (median of 5) and four at once;
#   - the same again with a second session;
#   - the builder's mix of 5 members (the two checkpoints, repeated with other weights);
#   - the daemon's VmRSS and VmHWM (/proc/<pid>/status) before and after 100 rounds of the ensemble requests;
#   - a 5-member submission (3 more checkpoints of a third session, inferred by children) and its re-weighting (all
#     cached: no inference, no slot), each with the daemon's peak memory while it ran (VmHWM reset through clear_refs).
# Prints one Markdown table.
#
# Usage (from the repository root, after `cargo build --release`):
#   bench/scale.sh N [path/to/rush]     # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: KEEP=1 keeps the temporary folder; TRAIN_TIMEOUT (seconds per session, default 7200); SIZE, the image
# size of sessions 1 and 2 (default 32; at N = 700,000 on 2 cores, SIZE=8 makes their epochs minutes, not half hours,
# and changes none of the endpoint or memory figures, which depend on N and the test set, not on the image size).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:?usage: bench/scale.sh N [path/to/rush]}"
RUSH="$(realpath "${2:-${CARGO_TARGET_DIR:-target}/release/rush}")"
TRAIN_TIMEOUT="${TRAIN_TIMEOUT:-7200}"
SIZE="${SIZE:-32}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release first)" >&2; exit 2; }
TEST=$((N / 5))

tmp="$(mktemp -d)"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
export RUSH_HOME="$tmp/home"
unset RUSH_URL
mkdir -p "$tmp/exp"
rows=()
row() { rows+=("| $1 | $2 |"); echo "  $1: $2" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f s", b - a }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
mem() { # VmRSS and VmHWM of the daemon, in MB
  awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { printf "VmRSS %.0f MB, VmHWM %.0f MB", r / 1024, h / 1024 }' \
    "/proc/$daemon_pid/status"
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$daemon_pid/status"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$daemon_pid/status"; }
reset_peak() { echo 5 > "/proc/$daemon_pid/clear_refs" 2>/dev/null || echo "(VmHWM could not be reset)" >&2; }

start_daemon() { # sets daemon_pid, ADDR and STARTED (the seconds until /api/info answers)
  rm -f "$RUSH_HOME/daemon.addr"
  local t0; t0="$(now)"
  RUST_LOG=info,sqlx=warn "$RUSH" daemon --bind 127.0.0.1:0 --user bench --cpu-slots 1 --experiments "$tmp/exp" \
    >>"$tmp/daemon.log" 2>&1 &
  daemon_pid=$!
  until [ -s "$RUSH_HOME/daemon.addr" ] && curl -fsS "http://$(cat "$RUSH_HOME/daemon.addr")/api/info" >/dev/null 2>&1; do
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; echo "the daemon died" >&2; exit 1; }
    sleep 0.02
  done
  ADDR="$(cat "$RUSH_HOME/daemon.addr")"
  STARTED="$(since "$t0")"
}
stop_daemon() { kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""; }

fetch() { # seconds of one GET, failing on an error status
  curl -fsS -o /dev/null -w '%{time_total}' "http://$ADDR$1"
}
median5() { # median of 5 GETs, in ms
  local times=()
  for _ in 1 2 3 4 5; do times+=("$(fetch "$1")"); done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 3p | { read -r s; ms "$s"; }
}
four_at_once() { # 4 concurrent GETs: the slowest, in ms
  local pids=() i
  for i in 1 2 3 4; do fetch "$1" >"$tmp/c$i" & pids+=($!); done
  wait "${pids[@]}"
  cat "$tmp"/c[1-4] | sort -n | tail -1 | { read -r s; ms "$s"; }
}

spec() { # name, seed, image size, epochs
  cat >"$tmp/exp/$1.yaml" <<EOF
dataset: big
model: baseline_cnn
image_size: $3
batch_size: 256
epochs: $4
precision: fp32
optimizer: {name: adamw, lr: 0.003}
schedule: {name: constant, warmup_epochs: 0}
resources: {gpus: auto}
checkpoints: {keep_best: 3, keep_last: true}
seed: $2
EOF
}
wait_succeeded() {
  local deadline=$(( $(date +%s) + TRAIN_TIMEOUT )) state
  while :; do
    state="$(curl -fsS "http://$ADDR/api/sessions/$1" 2>/dev/null | grep -o '"state":"[a-z]*"' | head -1 || true)"
    case "$state" in
      *succeeded*) return 0 ;;
      *failed*|*stopped*|*interrupted*) echo "session $1: $state" >&2; exit 1 ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || { echo "session $1 timed out" >&2; exit 1; }
    sleep 2
  done
}

submit() { # rush submit ARGS...; prints the submission's time from queued to scored in the daemon, and the CLI's
  local t0 out id view
  t0="$(now)"
  out="$("$RUSH" submit "$@")"
  id="$(printf '%s' "$out" | sed -n 's/^submission \([0-9]*\).*/\1/p' | head -1)"
  view="$(curl -fsS "http://$ADDR/api/submissions/$id")"
  printf '%s' "$view" | tr ',' '\n' | awk -F: -v cli="$(since "$t0")" '
    /"created"/ { c = $2 } /"finished"/ { f = $2 } /"infer_seconds"/ { i = $2 } /"score_seconds"/ { s = $2 }
    END { printf "queued to scored %.2f s in the daemon (inference %.2f s, mixing + .npy + scoring %.3f s); rush submit %s", f - c, i, s, cli }'
}

endpoints() { # label; the four endpoints, one at a time and four at once
  local mix="/api/datasets/big/ensemble?members=$2"
  for route in /api/datasets/big/cache "/ensemble?d=big" "$mix" /api/datasets/big/ensemble/auto; do
    row "$1: GET $route" "$(median5 "$route") (4 at once: slowest $(four_at_once "$route"))"
  done
}

echo "rush scale: N = $N training + $TEST test stickers; $("$RUSH" --version); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem/ {print $2}') GB" >&2

t0="$(now)"
"$RUSH" dataset synth --out "$tmp/src" --train "$N" --test "$TEST" --width 16 --height 16 --quiet --seed 7
row "rush dataset synth ($N + $TEST stickers, 16 px)" "$(since "$t0")"
start_daemon
row "daemon start until /api/info answers (empty home)" "$STARTED"
row "idle daemon" "$(mem)"
t0="$(now)"
"$RUSH" dataset push big "$tmp/src" >/dev/null
row "rush dataset push (copy + registration)" "$(since "$t0")"
row "after registration" "$(mem)"
stop_daemon
start_daemon
row "daemon start until /api/info answers (dataset registered)" "$STARTED"
row "restarted daemon" "$(mem)"

spec a 1 "$SIZE" 1
t0="$(now)"
wait_succeeded bench/big/1
row "session 1: baseline CNN, $SIZE px, 1 epoch (queued to succeeded)" "$(since "$t0")"
row "first submission (inference of the test and validation splits)" "$(submit bench/big/1 1)"
endpoints "after the first submission" "bench/big/1:1:1"
row "after the first submission" "$(mem)"

spec b 2 "$SIZE" 1
t0="$(now)"
wait_succeeded bench/big/2
row "session 2: the same again" "$(since "$t0")"
row "second submission" "$(submit bench/big/2 1)"
endpoints "after the second submission" "bench/big/1:1:1,bench/big/2:1:1"

five="bench/big/1:1:1,bench/big/2:1:1,bench/big/1:1:0.5,bench/big/2:1:2,bench/big/1:1:1"
row "the builder's mix of 5 members: GET /api/datasets/big/ensemble?members=(5)" \
  "$(median5 "/api/datasets/big/ensemble?members=$five") (4 at once: slowest $(four_at_once "/api/datasets/big/ensemble?members=$five"))"

before="$(mem)"
reset_peak
t0="$(now)"
for _ in $(seq 100); do
  for route in /api/datasets/big/cache "/ensemble?d=big" "/api/datasets/big/ensemble?members=$five" \
    /api/datasets/big/ensemble/auto; do
    fetch "$route" >/dev/null
  done
done
row "100 rounds of the ensemble requests (cache, page, mix of 5, auto)" "$(since "$t0"); before: $before; after: $(mem) (VmHWM reset before them)"

spec c 3 8 3
t0="$(now)"
wait_succeeded bench/big/3
row "session 3: 8 px, 3 epochs (3 checkpoints)" "$(since "$t0")"
base="$(rss_kb)"
reset_peak
took="$(submit bench/big/1:1 bench/big/2:1 bench/big/3:1 bench/big/3:2 bench/big/3:3 --weights 1,1,1,1,2)"
row "5-member submission (3 members inferred by children)" "$took; daemon peak +$(( ($(hwm_kb) - base) / 1024 )) MB over its VmRSS before ($(( base / 1024 )) MB)"
base="$(rss_kb)"
reset_peak
took="$(submit bench/big/1:1 bench/big/2:1 bench/big/3:1 bench/big/3:2 bench/big/3:3 --weights 2,1,1,1,1)"
row "the same 5 members re-weighted (all cached: no inference, no slot)" "$took; daemon peak +$(( ($(hwm_kb) - base) / 1024 )) MB over its VmRSS before ($(( base / 1024 )) MB)"
row "at the end" "$(mem)"

echo
echo "N = $N training + $TEST test stickers (16 px), $(nproc) cores"
echo
echo "| step | figure |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
