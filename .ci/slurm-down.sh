#!/usr/bin/env bash
# Stop the single-node test cluster started by .ci/slurm-up.sh (idempotent).
#
# Cancels this cluster's jobs, then stops slurmd, slurmctld and munged by the pids in their pid
# files (never by process name, so other processes on the machine are left alone).
set -uo pipefail

log() { echo "slurm-down: $*"; }
# A running (not zombie) process; daemons reparented to a non-reaping init linger as zombies.
alive() {
  local st=""
  [ -r "/proc/$1/stat" ] && read -r _ _ st _ <"/proc/$1/stat" && [ "$st" != Z ]
}

stop_pidfile() {
  local name="$1" pf="$2" pid
  if [ -s "$pf" ] && pid="$(cat "$pf")" && alive "$pid"; then
    log "stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 20); do
      alive "$pid" || break
      sleep 0.5
    done
    if alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
  else
    log "$name not running"
  fi
  rm -f "$pf"
}

if command -v scancel >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q UP; then
  log "cancelling jobs of user $(id -un)"
  scancel --user "$(id -un)" 2>/dev/null || true
fi
stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile munged /run/munge/munged.pid
exit 0
