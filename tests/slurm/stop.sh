#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh started, by the pids it recorded under
# $VITSAE_SLURM_DIR/run (default /tmp/vitsae-slurm). Never signals any other process.
# Exits 0 even if some daemons are already gone.
# Usage: tests/slurm/stop.sh [--purge]     --purge also deletes the state directory.
set -uo pipefail

STATE=${VITSAE_SLURM_DIR:-/tmp/vitsae-slurm}
PURGE=0
[[ ${1:-} == --purge ]] && PURGE=1
export SLURM_CONF=$STATE/etc/slurm.conf PATH=$PATH:/usr/sbin:/sbin

log() { printf '[slurm-ci %s] %s\n' "$(date +%T)" "$*"; }

# pid recorded for NAME if that process is alive and is still that program, else empty.
ours() {
    local name=$1 pid
    [[ -s $STATE/run/$name.pid ]] || return 0
    pid=$(<"$STATE/run/$name.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] && echo "$pid"
}

# Cancel jobs still in this (throwaway) cluster, so slurmd's job steps end with it.
if [[ -n $(ours slurmctld) && -f $SLURM_CONF ]]; then
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// } ]]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 20); do
            [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
fi

for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=$(ours "$name")
    if [[ -z $pid ]]; then
        log "$name not running"
        rm -f "$STATE/run/$name.pid"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do   # up to 20 s (MariaDB flushes InnoDB on shutdown)
        [[ -n $(ours "$name") ]] || break
        sleep 0.2
    done
    if [[ -n $(ours "$name") ]]; then
        log "$name (pid $pid) did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
    fi
    log "stopped $name (pid $pid)"
    rm -f "$STATE/run/$name.pid"
done

if ((PURGE)); then
    case $STATE in
        /|"") log "refusing to purge '$STATE'" ;;
        *) rm -rf -- "$STATE" && log "removed $STATE" ;;
    esac
fi
exit 0
