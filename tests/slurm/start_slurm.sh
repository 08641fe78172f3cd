#!/usr/bin/env bash
# Start a throw-away, single-node SLURM cluster on this machine, for tests only.
#
#   tests/slurm/start_slurm.sh STATE_DIR
#
# Installs munge + slurm-wlm from Debian when missing (needs root and apt),
# writes STATE_DIR/slurm.conf (node "localhost", partition "debug", one fake
# GPU as GRES), starts munged, slurmctld and slurmd without systemd, records
# their PIDs in STATE_DIR/*.pid and waits until the node is idle.
# Afterwards:  export SLURM_CONF=STATE_DIR/slurm.conf   (sbatch, squeue, ...)
# Stop with:   tests/slurm/stop_slurm.sh STATE_DIR
#
# Environment knobs:
#   SLURM_TEST_GPU=0        no GRES GPU on the node (default 1: one fake GPU)
#   SLURM_TEST_WAIT=60      seconds to wait for the node to become idle
#   SLURM_TEST_NO_INSTALL=1 never run apt-get (fail instead)
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
mkdir -p "$1"
STATE=$(cd "$1" && pwd)
CONF="$STATE/slurm.conf"
export SLURM_CONF="$CONF"
WANT_GPU=${SLURM_TEST_GPU:-1}
WAIT=${SLURM_TEST_WAIT:-60}

log() { echo "[start_slurm] $*"; }
die() { echo "[start_slurm] ERROR: $*" >&2; exit 1; }
# Exit status 3: SLURM cannot be installed here (callers may skip, not fail).
cannot() { echo "[start_slurm] CANNOT INSTALL: $*" >&2; exit 3; }
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ $(id -u) -eq 0 ]] || cannot "must run as root (slurmd runs jobs as root here)"

# --- 1. packages -------------------------------------------------------------
t0=$(date +%s)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    [[ ${SLURM_TEST_NO_INSTALL:-0} == 1 ]] && cannot "SLURM not installed and SLURM_TEST_NO_INSTALL=1"
    command -v apt-get >/dev/null || cannot "apt-get not available; cannot install SLURM"
    log "installing slurm-wlm and munge from Debian (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; cannot "apt-get update failed"; }
    # The packages must not start their system services (no systemd here, no
    # /etc/slurm/slurm.conf yet): deny service starts during the installation.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -q slurm-wlm munge >>"$STATE/apt.log" 2>&1 \
        || { tail -20 "$STATE/apt.log" >&2; cannot "apt-get install slurm-wlm munge failed"; }
    log "installed in $(( $(date +%s) - t0 )) s: $(dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm)"
else
    log "SLURM already installed: $(dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm 2>/dev/null || sinfo -V)"
fi
t1=$(date +%s)

# --- 2. munge ----------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
id munge >/dev/null 2>&1 && MUNGE_USER=munge || MUNGE_USER=root
chown "$MUNGE_USER" /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown "$MUNGE_USER" /run/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
    log "munged already running (system-wide socket /run/munge)"
else
    log "starting munged"
    if [[ $MUNGE_USER == munge ]]; then
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    else
        munged --force --pid-file=/run/munge/munged.pid
    fi
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE/munged.pid"   # only stopped by us if we started it
fi

# --- 3. already running? -----------------------------------------------------
if alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" \
    && sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    log "cluster in $STATE already running: $(sinfo -h -N -o '%N %T %G')"
    echo "SLURM_CONF=$CONF"
    exit 0
fi
# Half-dead leftovers of an earlier start: stop them (not munged) first.
for d in slurmd slurmctld; do
    if alive "$STATE/$d.pid"; then
        pid=$(cat "$STATE/$d.pid"); kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        log "stopped stale $d ($pid)"
    fi
    rm -f "$STATE/$d.pid"
done

# --- 4. configuration --------------------------------------------------------
mkdir -p "$STATE"/{state,spool,log}
CPUS=$(nproc)
MEM_TOTAL=$(free -m | awk '/^Mem:/ {print $2}')
REAL_MEM=$(( MEM_TOTAL - 1024 ))
(( REAL_MEM < 1000 )) && REAL_MEM=$(( MEM_TOTAL * 3 / 4 ))
GRES_LINES=""
NODE_GRES=""
if [[ $WANT_GPU == 1 ]]; then
    GRES_LINES="GresTypes=gpu"
    NODE_GRES=" Gres=gpu:1"
    # A fake GPU: slurmd only needs a device file to hand out.
    echo "NodeName=localhost Name=gpu File=/dev/null" >"$STATE/gres.conf"
else
    rm -f "$STATE/gres.conf"
fi

cat >"$CONF" <<EOF
# Written by tests/slurm/start_slurm.sh for a throw-away test cluster.
ClusterName=brainagetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol this long (no accounting here):
# the plugin's squeue status checks and the tests' job counts rely on it.
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$GRES_LINES
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN$NODE_GRES
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
log "wrote $CONF (CPUs=$CPUS RealMemory=$REAL_MEM gpu=$WANT_GPU)"

# The slurm-jobstep plugin runs each rule with `srun` inside the job and strips
# every SLURM_* variable, SLURM_CONF included, from srun's environment. srun then
# looks for /etc/slurm/slurm.conf, then /run/slurm/conf/slurm.conf (slurmd's
# configless cache). Link our configuration there (a runtime directory).
if [[ -e /etc/slurm/slurm.conf && "$(readlink -f /etc/slurm/slurm.conf)" != "$CONF" ]]; then
    die "/etc/slurm/slurm.conf exists: srun inside jobs would use it instead of $CONF"
fi
mkdir -p /run/slurm/conf
ln -sfn "$CONF" /run/slurm/conf/slurm.conf
if [[ -f $STATE/gres.conf ]]; then ln -sfn "$STATE/gres.conf" /run/slurm/conf/gres.conf
else rm -f /run/slurm/conf/gres.conf; fi

# --- 5. daemons --------------------------------------------------------------
# -D: stay in the foreground, so $! is the daemon's PID; setsid: own session,
# so the daemons survive the caller; no inherited stdout (pytest pipes).
setsid slurmctld -D -i -f "$CONF" </dev/null >"$STATE/log/slurmctld.out" 2>&1 &
echo $! >"$STATE/slurmctld.pid"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q UP \
    || { tail -20 "$STATE/log/slurmctld.out" "$STATE/log/slurmctld.log" >&2; die "slurmctld did not come up"; }

setsid slurmd -D -N localhost -f "$CONF" </dev/null >"$STATE/log/slurmd.out" 2>&1 &
echo $! >"$STATE/slurmd.pid"

t2=$(date +%s)
state=""
while (( $(date +%s) - t2 < WAIT )); do
    alive "$STATE/slurmd.pid" || break
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1)
    [[ $state == idle ]] && break
    sleep 0.5
done
if [[ $state != idle ]]; then
    tail -20 "$STATE/log/slurmd.out" "$STATE/log/slurmd.log" "$STATE/log/slurmctld.log" >&2 || true
    die "node not idle after ${WAIT} s (state '${state:-none}')"
fi
log "cluster up in $(( $(date +%s) - t1 )) s (install/check took $(( t1 - t0 )) s): $(sinfo -h -N -o '%N %P %T cpus=%c mem=%m gres=%G')"
echo "SLURM_CONF=$CONF"
