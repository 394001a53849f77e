#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine for the cluster tests (issue 6).
#
# Idempotent: installs Debian's slurm-wlm and munge if missing, writes a munge key and a
# one-node slurm.conf (this host, its real CPUs and memory from `slurmd -C`, one default
# partition, no accounting), starts munged, slurmctld and slurmd unless already running, and
# waits until `sinfo` shows the node idle. Needs root (CI containers run as root).
#
# Environment (all optional):
#   SLURM_PARTITION      partition name (default: debug); the CI profile's
#                        (workflow/profiles/slurm-ci) default-resources slurm_partition must
#                        match it
#
# The cluster tests (tests/test_cluster.py) submit jobs only with TWOCLOCKS_TEST_SLURM=1, which
# .ci/run exports right after this script.
#   SLURM_CLUSTER_NAME   ClusterName (default: twoclocks)
#   SLURM_UP_TIMEOUT_S   seconds to wait for the node to become idle (default: 60)
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
CLUSTER="${SLURM_CLUSTER_NAME:-twoclocks}"
TIMEOUT_S="${SLURM_UP_TIMEOUT_S:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key

log() { echo "slurm-up: $*"; }
die() {
  echo "slurm-up: ERROR: $*" >&2
  for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
    if [ -s "$f" ]; then
      echo "---- last lines of $f ----" >&2
      tail -n 20 "$f" >&2
    fi
  done
  exit 1
}
# A running (not zombie) process; daemons reparented to a non-reaping init linger as zombies.
alive() {
  local st=""
  [ -r "/proc/$1/stat" ] && read -r _ _ st _ <"/proc/$1/stat" && [ "$st" != Z ]
}
pid_alive() { [ -s "$1" ] && alive "$(cat "$1")"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts daemons)"

# 1. Packages. `apt-get update` only when the install fails on a stale/empty package index.
missing=()
for exe in munged slurmctld slurmd sbatch sinfo squeue; do
  command -v "$exe" >/dev/null 2>&1 || missing+=("$exe")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing slurm-wlm and munge (missing: ${missing[*]})"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install slurm-wlm and munge by hand"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(slurm-wlm munge)
  if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" ||
      die "apt-get install ${pkgs[*]} failed"
  fi
fi
for exe in munged slurmctld slurmd sbatch sinfo squeue scontrol; do
  command -v "$exe" >/dev/null 2>&1 || die "$exe still missing after install"
done

# 2. munge: a key readable only by the munge user, then the daemon.
id munge >/dev/null 2>&1 || die "user 'munge' missing (the munge package creates it)"
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s "$MUNGE_KEY" ]; then
  log "writing a new munge key"
  dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge "$MUNGE_KEY" /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 "$MUNGE_KEY"
chmod 0755 /run/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force || die "munged failed to start"
  for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.5
  done
  munge -n | unmunge >/dev/null || die "munge credential round trip fails"
fi

# 3. slurm.conf for one node: this host with the CPU/memory layout slurmd itself detects.
HOST="$(uname -n)"
HOST="${HOST%%.*}" # short name, as slurmd -C reports it
node_hw="$(slurmd -C | head -n 1)" || die "slurmd -C failed"
case "$node_hw" in
  NodeName=*) ;;
  *) die "unexpected 'slurmd -C' output: $node_hw" ;;
esac
node_hw="${node_hw#NodeName=* }" # keep "CPUs=... RealMemory=..."
mkdir -p "$CONF_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
new_conf="$(mktemp)"
cat >"$new_conf" <<EOF
# Written by .ci/slurm-up.sh: single-node test cluster, no accounting.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# squeue is the executor's status command (no sacct): finished jobs must stay visible.
MinJobAge=600
ReturnToService=2
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$HOST NodeAddr=127.0.0.1 $node_hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if ! cmp -s "$new_conf" "$CONF"; then
  install -m 0644 "$new_conf" "$CONF"
  conf_changed=1
  log "wrote $CONF ($HOST: $node_hw, partition $PARTITION)"
fi
rm -f "$new_conf"

# 4. Daemons. A changed config restarts daemons this script started before (by pid file).
if [ "$conf_changed" -eq 1 ]; then
  for pf in "$SLURMD_PID" "$CTLD_PID"; do
    if pid_alive "$pf"; then
      pid="$(cat "$pf")"
      log "config changed: stopping pid $pid from $pf"
      kill "$pid"
      for _ in $(seq 1 40); do alive "$pid" || break; sleep 0.5; done
      alive "$pid" && die "pid $pid from $pf did not stop"
      rm -f "$pf"
    fi
  done
fi
if pid_alive "$CTLD_PID" && scontrol ping >/dev/null 2>&1; then
  log "slurmctld already running"
else
  log "starting slurmctld"
  # -c: start from a clean state (the test cluster keeps no jobs across restarts).
  slurmctld -c || die "slurmctld failed to start"
fi
if pid_alive "$SLURMD_PID"; then
  log "slurmd already running"
else
  log "starting slurmd"
  slurmd || die "slurmd failed to start"
fi

# 5. Wait for the controller and for the node to be idle.
deadline=$((SECONDS + TIMEOUT_S))
until scontrol ping 2>/dev/null | grep -q "UP"; do
  [ "$SECONDS" -lt "$deadline" ] || die "slurmctld does not answer 'scontrol ping'"
  sleep 1
done
state=""
while :; do
  state="$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1 || true)"
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain* | drained*)
      scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
      ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || die "node $HOST not idle after ${TIMEOUT_S}s (state: '${state:-none}')"
  sleep 1
done
log "cluster up: node $HOST is $state, partition $PARTITION"
sinfo
