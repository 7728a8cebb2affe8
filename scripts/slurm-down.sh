#!/usr/bin/env bash
# Stops the single-node test cluster that scripts/slurm-up.sh started (slurmd, slurmctld, munged), by their pid files.
# The state folder (RUSH_SLURM_DIR, default /tmp/rush-slurm) stays, so job ids go on counting; delete it to start over.
set -euo pipefail

STATE="${RUSH_SLURM_DIR:-/tmp/rush-slurm}"

stop() {
  local pidfile="$1" name="$2" pid
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
    echo "[slurm-down] stopping $name ($pid)" >&2
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "[slurm-down] $name ($pid) did not stop within 10 s" >&2
    return 1
  fi
}

stop "$STATE/run/slurmd.pid" slurmd
stop "$STATE/run/slurmctld.pid" slurmctld
stop "$STATE/munge/munged.pid" munged
