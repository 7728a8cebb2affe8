#!/usr/bin/env bash
# Starts a real single-node Slurm cluster for rush's tests, idempotently, without systemd (shared/SLURM.md has why
# each setting is there): installs Debian's slurm-wlm pieces and munge when missing, writes the config under a state
# folder (RUSH_SLURM_DIR, default /tmp/rush-slurm) with two fake GPUs, starts munged, slurmctld and slurmd unless they
# already run, and waits until the node is idle. Needs root. Prints `export SLURM_CONF=...` with --env.
# scripts/slurm-down.sh stops the daemons.
set -euo pipefail

STATE="${RUSH_SLURM_DIR:-/tmp/rush-slurm}"
CTLD_PORT="${RUSH_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${RUSH_SLURM_SLURMD_PORT:-6818}"
CONF="$STATE/etc/slurm.conf"
MUNGE_DIR="$STATE/munge"
MUNGE_SOCKET="$MUNGE_DIR/munged.socket"

log() { echo "[slurm-up] $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and runs munged and slurmd)"

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ "${#missing[@]}" = 0 ] && return
  log "installing slurm-wlm and munge (missing: ${missing[*]})"
  local pkgs=(slurmctld slurmd slurm-client munge)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; then
    log "install failed; refreshing the package lists once"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" >&2
  fi
}

# Is the process in this pid file alive and running this program?
alive() {
  local pidfile="$1" name="$2" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]
}

write_config() {
  mkdir -p "$STATE/etc" "$STATE/dev" "$STATE/spool/ctld" "$STATE/spool/slurmd" "$STATE/log" "$STATE/run"
  chmod 0755 "$STATE"
  # Fake GPUs: Slurm reads the index from the device file's name; the files must be devices, so link to /dev/null.
  ln -sfn /dev/null "$STATE/dev/nvidia0"
  ln -sfn /dev/null "$STATE/dev/nvidia1"

  local node host cpus real_mem mem def_mem
  node="$(slurmd -C | head -n 1)"
  host="$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node")"
  cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")"
  real_mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
  [ -n "$host" ] && [ -n "$cpus" ] && [ -n "$real_mem" ] || die "cannot read the node from 'slurmd -C': $node"
  # A margin of about 1 GB, or slurmd reports less than configured and the node drains.
  mem=$((real_mem > 2048 ? real_mem - 1024 : real_mem * 3 / 4))
  def_mem=$((mem / cpus < 1024 ? mem / cpus : 1024))
  node="$(sed "s/RealMemory=[0-9]*/RealMemory=$mem/" <<<"$node")"

  local new="$CONF.new"
  cat >"$new" <<EOF
# Written by rush's scripts/slurm-up.sh: a single-node test cluster. Edits are overwritten.
ClusterName=rush
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
PlugStackConfig=$STATE/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$def_mem
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MinJobAge=3600
KillWait=5
ReturnToService=2
MpiDefault=none
GresTypes=gpu
$node NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
# Tests keep more jobs alive (mostly sleeping) than a small machine has cores: cores may be shared by up to 4 jobs.
# GPUs (GRES) are never shared, so two GPU jobs still get different GPUs and a third one waits.
PartitionName=rush Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  cat >"$STATE/etc/gres.conf.new" <<EOF
AutoDetect=off
NodeName=$host Name=gpu File=$STATE/dev/nvidia[0-1]
EOF
  : >"$STATE/etc/plugstack.conf"
  CHANGED=0
  for f in "$CONF" "$STATE/etc/gres.conf"; do
    if ! cmp -s "$f.new" "$f"; then
      mv "$f.new" "$f"
      CHANGED=1
    else
      rm -f "$f.new"
    fi
  done
}

start_munge() {
  # munged refuses a socket folder that others may write; it runs as the munge user with its own files.
  mkdir -p "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR"
  chmod 0755 "$MUNGE_DIR"
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"
  chmod 0600 "$MUNGE_DIR/munge.key"
  if alive "$MUNGE_DIR/munged.pid" munged; then return; fi
  log "starting munged"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" 9>&- \
    || die "munged did not start; see $MUNGE_DIR/munged.log"
}

stop_slurm() {
  local pidfile pid
  for pidfile in "$STATE/run/slurmd.pid" "$STATE/run/slurmctld.pid"; do
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
}

start_slurm() {
  export SLURM_CONF="$CONF"
  if [ "$CHANGED" = 1 ] && { alive "$STATE/run/slurmctld.pid" slurmctld || alive "$STATE/run/slurmd.pid" slurmd; }; then
    log "configuration changed: restarting slurmctld and slurmd"
    stop_slurm
  fi
  if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    slurmctld 9>&- || die "slurmctld did not start; see $STATE/log/slurmctld.log"
  fi
  if ! alive "$STATE/run/slurmd.pid" slurmd; then
    log "starting slurmd"
    slurmd 9>&- || die "slurmd did not start; see $STATE/log/slurmd.log"
  fi
  local state=""
  for _ in $(seq 300); do
    state="$(sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)"
    case "$state" in
      idle | mix | alloc) log "node is $state (SLURM_CONF=$CONF)"; return ;;
      drain* | down* | drng*) scontrol update NodeName=ALL State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.1
  done
  die "the node did not become idle within 30 s (state: ${state:-none}); see $STATE/log/"
}

mkdir -p "$STATE"
# One set-up at a time; the daemons must not inherit the lock (9>&- where they start).
exec 9>"$STATE/.lock"
flock -w 300 9 || die "another slurm-up.sh holds $STATE/.lock"
install_packages
write_config
start_munge
start_slurm

if [ "${1:-}" = "--env" ]; then
  echo "export SLURM_CONF='$CONF'"
fi
