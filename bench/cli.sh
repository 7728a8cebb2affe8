#!/usr/bin/env bash
# The light CLI's figures (BENCHMARKS.md, "Light CLI"): how long a client command takes and how much memory it and an
# idle daemon hold, now that only `rush-train` (train, infer, doctor, the training benches) loads libtorch.
#   - `rush --version`: best wall time of RUNS, and its maximum RSS (GNU time's %M);
#   - `rush ps -a` and `rush dataset ls` against a running daemon on a temporary home: best of RUNS, maximum RSS;
#   - the idle daemon (no session, a few seconds after start-up): VmRSS from /proc/<pid>/status, and whether any
#     libtorch or libc10 library is mapped into it (/proc/<pid>/maps);
#   - the NEEDED entries of the binary that name libtorch or libc10 (readelf).
# Goals (issue 22): `rush ps` under 50 ms, an idle daemon under 100 MB.
#
# Usage (from the repository root, after `cargo build --release --bins`):
#   bench/cli.sh [path/to/rush]       # default: $CARGO_TARGET_DIR/release/rush, else target/release/rush
# Environment: RUNS (default 10), IDLE (seconds the daemon idles before its VmRSS is read, default 3).
set -uo pipefail
cd "$(dirname "$0")/.."
RUSH="${1:-${CARGO_TARGET_DIR:-target}/release/rush}"
RUNS="${RUNS:-10}"
IDLE="${IDLE:-3}"
[ -x "$RUSH" ] || { echo "no rush binary at $RUSH (cargo build --release --bins first)" >&2; exit 2; }
# A binary built before the split links libtorch and needs to find it.
if [ -z "${LD_LIBRARY_PATH:-}" ] && [ -x scripts/setup.sh ]; then eval "$(scripts/setup.sh --env)" >/dev/null 2>&1 || true; fi

tmp="$(mktemp -d)"
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export RUSH_HOME="$tmp/home"
unset RUSH_URL RUSH_TOKEN

# Best wall time in milliseconds of RUNS runs of the command, then its maximum RSS in MB (one more run, under GNU time).
measure() {
  local best="" t0 t1 ms rss="-"
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  if [ -x /usr/bin/time ]; then
    rss=$(/usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1)
    rss=$(awk -v k="$rss" 'BEGIN { printf "%.0f", k / 1024 }')
  fi
  printf '%d.%03d ms | %s MB' $((best / 1000)) $((best % 1000)) "$rss"
}

echo "$RUSH, $(nproc) cores, best of $RUNS"
echo
echo "| command | wall (best) | max RSS |"
echo "|---|---|---|"
echo "| rush --version | $(measure "$RUSH" --version) |"

mkdir -p "$tmp/experiments"
"$RUSH" daemon --bind 127.0.0.1:0 --cpu-slots 1 --experiments "$tmp/experiments" >"$tmp/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
  [ -s "$RUSH_HOME/daemon.addr" ] && break
  kill -0 "$daemon" 2>/dev/null || { echo "the daemon exited:" >&2; tail -5 "$tmp/daemon.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$RUSH_HOME/daemon.addr" ] || { echo "the daemon wrote no daemon.addr" >&2; exit 1; }
echo "| rush ps -a | $(measure "$RUSH" ps -a) |"
echo "| rush dataset ls | $(measure "$RUSH" dataset ls) |"
sleep "$IDLE"
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon/status")
torch_maps=$(grep -cE 'lib(torch|c10)[^/]*\.so' "/proc/$daemon/maps")
echo
echo "idle daemon: VmRSS $(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }') MB;" \
  "libtorch/libc10 mappings: $torch_maps"
if command -v readelf >/dev/null; then
  needed=$(readelf -d "$RUSH" | grep NEEDED | grep -oE 'lib(torch|c10)[^]]*' | tr '\n' ' ')
  echo "$(basename "$RUSH")'s NEEDED libtorch/libc10 entries: ${needed:-none}"
fi
