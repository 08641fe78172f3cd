#!/usr/bin/env bash
# Stop the test cluster started by tests/slurm/start_slurm.sh STATE_DIR.
# Only the processes whose PIDs it recorded in STATE_DIR are stopped
# (munged only if start_slurm.sh started it); waits until they have exited.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
[[ -d $1 ]] || exit 0
STATE=$(cd "$1" && pwd)

stop_pid() {   # name pidfile
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "[stop_slurm] $name ($pid) ignored SIGTERM for 10 s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        echo "[stop_slurm] stopped $name ($pid)"
    fi
    rm -f "$file"
}

# Compute node first (it kills its running job steps), then the controller.
stop_pid slurmd "$STATE/slurmd.pid"
stop_pid slurmctld "$STATE/slurmctld.pid"
stop_pid munged "$STATE/munged.pid"

# Links start_slurm.sh made for srun inside jobs, if they still point here.
for f in slurm.conf gres.conf; do
    link=/run/slurm/conf/$f
    if [[ -L $link && "$(readlink "$link")" == "$STATE/$f" ]]; then
        rm -f "$link"
    fi
done
exit 0
