#!/usr/bin/env bash
# Start a real single-node Slurm (munged, MariaDB, slurmdbd, slurmctld, slurmd) with fake GPUs,
# for CI. Runs as root; no systemd, no cgroups. All state lives under $VITSAE_SLURM_DIR.
# Usage: sudo tests/slurm/start.sh            then: source "$VITSAE_SLURM_DIR/env.sh"
# Stop:  sudo tests/slurm/stop.sh  [--purge]
# See tests/slurm/README.md for the environment variables.
set -euo pipefail

T0=$(date +%s.%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${VITSAE_SLURM_DIR:-/tmp/vitsae-slurm}
CLUSTER=${VITSAE_SLURM_CLUSTER:-vitsae}
ACCOUNT=${VITSAE_SLURM_ACCOUNT:-vitsae}
NGPUS=${VITSAE_SLURM_GPUS:-2}
CTLD_PORT=${VITSAE_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${VITSAE_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${VITSAE_SLURM_DBD_PORT:-6819}
TIMEOUT=${VITSAE_SLURM_TIMEOUT:-60}
DB_PASS=vitsae-ci-only
HOST=$(hostname -s)
NPROC=$(nproc)
CPUS=${VITSAE_SLURM_CPUS:-$NPROC}
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
# "A bit below the real memory": leave 1 GiB (at least 5%) to the OS and the daemons.
RESERVE=$(( MEM_TOTAL_MB / 20 > 1024 ? MEM_TOTAL_MB / 20 : 1024 ))
MEM_MB=${VITSAE_SLURM_MEM_MB:-$(( MEM_TOTAL_MB - RESERVE ))}
DEF_MEM_PER_CPU=${VITSAE_SLURM_DEF_MEM_PER_CPU:-1024}
# task/affinity binds tasks to real cores; with more CPUs advertised than exist, use task/none.
if (( CPUS > NPROC )); then TASK_PLUGIN=task/none; else TASK_PLUGIN=task/affinity; fi

log() { printf '[slurm-ci %s] %s\n' "$(date +%T)" "$*"; }
die() {
    log "ERROR: $*"
    for f in munged mariadbd slurmdbd slurmctld slurmd; do
        for lf in "$STATE/log/$f.log" "$STATE/log/$f.out"; do
            [[ -s $lf ]] && { echo "---- tail $lf"; tail -n 25 "$lf"; }
        done
    done
    exit 1
}

[[ $(id -u) -eq 0 ]] || { echo "start.sh must run as root" >&2; exit 1; }

mkdir -p "$STATE"/{etc,spool/ctld,spool/d,log,run,munge,mysql,dev}

# ---- packages -------------------------------------------------------------------------------
need=()
for b in slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-client slurmdbd:slurmdbd \
         munged:munge mariadbd:mariadb-server; do
    command -v "${b%%:*}" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "${b%%:*}" >/dev/null 2>&1 \
        || need+=("${b#*:}")
done
if ((${#need[@]})); then
    log "installing slurm-wlm munge slurmdbd mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d 101: keep the package scripts from starting system daemons.
    pol=/usr/sbin/policy-rc.d; made_pol=0
    if [[ ! -e $pol ]]; then printf '#!/bin/sh\nexit 101\n' >"$pol"; chmod +x "$pol"; made_pol=1; fi
    apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server \
        mariadb-client >"$STATE/log/apt.log" 2>&1 || { tail -n 30 "$STATE/log/apt.log"; ((made_pol)) && rm -f "$pol"; exit 1; }
    ((made_pol)) && rm -f "$pol"
    log "packages installed ($(awk "BEGIN{printf \"%.0f\", $(date +%s.%N)-$T0}") s)"
fi
export PATH=$PATH:/usr/sbin:/sbin

# ---- state directory ------------------------------------------------------------------------
chmod 0755 "$STATE"
chmod 0700 "$STATE/munge"
export SLURM_CONF=$STATE/etc/slurm.conf
export MYSQL_UNIX_PORT=$STATE/run/mysqld.sock

# Is the daemon whose pid is recorded in $STATE/run/NAME.pid alive (and really that program)?
alive() {
    local name=$1 pid
    [[ -s $STATE/run/$name.pid ]] || return 1
    pid=$(<"$STATE/run/$name.pid")
    [[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$name"* ]]
}
# Has the process recorded for NAME exited? (Just after `start`, it may not have exec'd yet.)
gone() { ! kill -0 "$(cat "$STATE/run/$1.pid" 2>/dev/null || echo 0)" 2>/dev/null; }
# start NAME PORT CMD...: run CMD (the daemon in its foreground mode) detached, record its pid.
# PORT (or -) must be free: else the checks below would talk to some other Slurm.
start() {
    local name=$1 port=$2; shift 2
    if alive "$name"; then log "$name already running (pid $(<"$STATE/run/$name.pid"))"; return; fi
    if [[ $port != - ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port (for $name) is in use by a process this state dir did not start; stop it or set VITSAE_SLURM_*_PORT"
    fi
    setsid "$@" >>"$STATE/log/$name.out" 2>&1 </dev/null &
    echo $! >"$STATE/run/$name.pid"
    log "started $name (pid $!)"
}
wait_for() {  # wait_for DAEMON COMMAND... : poll until COMMAND succeeds (wall-clock timeout)
    local what=$1; shift; local end=$((SECONDS + TIMEOUT))
    until timeout 10 "$@" >/dev/null 2>&1; do
        gone "$what" && die "$what exited (see $STATE/log/$what.*)"
        ((SECONDS < end)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}

render() {  # render TEMPLATE OUT MODE
    sed -e "s|@STATE@|$STATE|g" -e "s|@HOST@|$HOST|g" -e "s|@CLUSTER@|$CLUSTER|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@NGPUS@|$NGPUS|g" \
        -e "s|@DEF_MEM_PER_CPU@|$DEF_MEM_PER_CPU|g" -e "s|@TASK_PLUGIN@|$TASK_PLUGIN|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" "$1" >"$2.tmp"
    chmod "$3" "$2.tmp"; mv "$2.tmp" "$2"
}

# Fake GPU device nodes (character devices, same numbers as /dev/null).
gres_lines=""
for ((i = 0; i < NGPUS; i++)); do
    [[ -c $STATE/dev/gpu$i ]] || { rm -f "$STATE/dev/gpu$i"; mknod "$STATE/dev/gpu$i" c 1 3; }
    gres_lines+="NodeName=$HOST Name=gpu Type=fake File=$STATE/dev/gpu$i"$'\n'
done
render "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf" 0644
render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf" 0600
sed "s|@STATE@|$STATE|g" "$HERE/gres.conf.in" | awk -v l="${gres_lines%$'\n'}" '{ if ($0 == "@GRES_LINES@") print l; else print }' \
    >"$STATE/etc/gres.conf"

# snakemake-executor-plugin-slurm-jobstep (0.6.1) strips every SLURM_* variable, SLURM_CONF included,
# from the environment of the `srun` it runs inside each job; on a real cluster srun then reads
# /etc/slurm/slurm.conf. Here a wrapper earlier in PATH puts SLURM_CONF back.
mkdir -p "$STATE/bin"
cat >"$STATE/bin/srun.tmp" <<EOF
#!/bin/sh
# written by tests/slurm/start.sh: see the comment there
export SLURM_CONF="\${SLURM_CONF:-$SLURM_CONF}"
exec $(PATH=/usr/bin:/bin:/usr/local/bin command -v srun) "\$@"
EOF
chmod 0755 "$STATE/bin/srun.tmp"; mv "$STATE/bin/srun.tmp" "$STATE/bin/srun"

cat >"$STATE/env.sh" <<EOF
# source this file to use the CI Slurm started by tests/slurm/start.sh
export SLURM_CONF=$SLURM_CONF
export VITSAE_SLURM_DIR=$STATE
export VITSAE_SLURM_PARTITION=debug
export VITSAE_SLURM_ACCOUNT=$ACCOUNT
export VITSAE_SLURM_MEM_MB=$MEM_MB
export PATH=$STATE/bin:\$PATH:/usr/sbin
EOF

# ---- munged ------------------------------------------------------------------------------------
# Slurm 22.05's sacct/sacctmgr ignore AuthInfo=socket= on their slurmdbd connection, so munged must
# serve the default socket. If a munged we did not start already serves it, use that one (its key).
MUNGE_SOCKET=/run/munge/munge.socket.2
munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
if ! alive munged && munge_ok; then
    log "using the munged already serving $MUNGE_SOCKET (not started by us; stop.sh leaves it)"
else
    if [[ ! -s $STATE/munge/munge.key ]]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 0600 "$STATE/munge/munge.key"
    mkdir -p "$(dirname "$MUNGE_SOCKET")"
    start munged - munged --foreground --force \
        --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/munged.seed" \
        --log-file="$STATE/log/munged.log"
    wait_for munged bash -c "munge -n -S $MUNGE_SOCKET | unmunge -S $MUNGE_SOCKET"
fi

# ---- MariaDB ----------------------------------------------------------------------------------
if [[ ! -d $STATE/mysql/mysql ]]; then
    log "initialising MariaDB datadir"
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" --skip-test-db \
        --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
        || { tail -n 30 "$STATE/log/mariadb-install.log"; die "mariadb-install-db failed"; }
fi
start mariadbd - mariadbd --no-defaults --user=root --datadir="$STATE/mysql" \
    --socket="$MYSQL_UNIX_PORT" --skip-networking --pid-file="$STATE/mysql/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --innodb-buffer-pool-size=64M \
    --innodb-lock-wait-timeout=900 --innodb-log-file-size=64M
wait_for mariadbd mariadb --no-defaults --socket="$MYSQL_UNIX_PORT" -uroot -e 'SELECT 1'
mariadb --no-defaults --socket="$MYSQL_UNIX_PORT" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# ---- slurmdbd ---------------------------------------------------------------------------------
start slurmdbd "$DBD_PORT" env MYSQL_UNIX_PORT="$MYSQL_UNIX_PORT" SLURM_CONF="$SLURM_CONF" slurmdbd -D
wait_for slurmdbd sacctmgr -n list cluster
if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if [[ -z $(sacctmgr -n -P list account "$ACCOUNT" format=account) ]]; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="vitsae CI" organization=vitsae >/dev/null
fi
# Associate root, the invoking sudo user and $VITSAE_SLURM_USERS with the account, so that
# `sacctmgr list user` (used by the Snakemake plugin to guess/validate the account) finds it.
for u in root ${SUDO_USER:-} ${VITSAE_SLURM_USERS:-}; do
    id "$u" >/dev/null 2>&1 || continue
    if [[ -z $(sacctmgr -n -P list assoc user="$u" account="$ACCOUNT" cluster="$CLUSTER" format=user) ]]; then
        sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" defaultaccount="$ACCOUNT" >/dev/null
    fi
done

# ---- slurmctld, slurmd ------------------------------------------------------------------------
start slurmctld "$CTLD_PORT" slurmctld -D -i
wait_for slurmctld sinfo -h
start slurmd "$SLURMD_PORT" slurmd -D
# Wait for the node to be idle; resume it once if it is drained/down (state survives restarts).
end=$((SECONDS + TIMEOUT)); resumed=0
while :; do
    gone slurmd && die "slurmd exited (see $STATE/log/slurmd.*)"
    st=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n1 || true)
    [[ $st == idle || $st == mixed || $st == allocated ]] && break
    if [[ $st == drain* || $st == down || $st == inval* ]] && ((resumed < 3)); then
        log "node is '$st'; resuming"; scontrol update nodename="$HOST" state=resume || true
        resumed=$((resumed + 1))
    fi
    sleep 0.5
    ((SECONDS < end)) || { sinfo -N -l || true; scontrol show node "$HOST" || true; die "node $HOST not idle after ${TIMEOUT}s (state '$st')"; }
done
T_UP=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$T0}")
log "node $HOST idle: CPUs=$CPUS RealMemory=${MEM_MB}MB Gres=gpu:fake:$NGPUS (set-up ${T_UP}s)"

# ---- prove it works ---------------------------------------------------------------------------
cd "$STATE"
cvd=$(timeout "$TIMEOUT" srun -A "$ACCOUNT" --gpus=1 --mem=100 -t 1 bash -c 'echo $CUDA_VISIBLE_DEVICES') \
    || die "srun --gpus=1 failed"
[[ $cvd =~ ^[0-9]+$ ]] || die "srun --gpus=1 printed CUDA_VISIBLE_DEVICES='$cvd', not a device index"
log "srun --gpus=1: CUDA_VISIBLE_DEVICES=$cvd"
jid=$(timeout "$TIMEOUT" sbatch --parsable --wait -A "$ACCOUNT" --gpus=1 --mem=100 -t 1 -J vitsae-ci-check \
      -o "$STATE/log/check-%j.out" --wrap 'echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES') \
    || die "sbatch --wait check job failed"
jid=${jid%%;*}
end=$((SECONDS + TIMEOUT))
until line=$(sacct -X -n -P -j "$jid" -o JobID,State,AllocTRES 2>/dev/null) && [[ $line == *COMPLETED*gres/gpu=1* ]]; do
    sleep 0.5
    ((SECONDS < end)) || die "job $jid not in sacct as COMPLETED with gres/gpu=1 (got: '${line:-}')"
done
log "sacct: $line"

T_ALL=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$T0}")
log "Slurm is up; set-up ${T_UP}s, with checks ${T_ALL}s"
echo "export SLURM_CONF=$SLURM_CONF PATH=$STATE/bin:\$PATH    # or: source $STATE/env.sh"
