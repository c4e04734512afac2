#!/usr/bin/env bash
# A one-node Slurm cluster in a directory of its own, for the Slurm tests (see ../shared/notes/slurm.md):
#   cluster.sh start DIR   install the packages if missing, write DIR/slurm.conf, start munged, slurmctld
#                          and slurmd, wait until the node is idle; clients use SLURM_CONF=DIR/slurm.conf
#   cluster.sh stop DIR    cancel every job, then stop each daemon by the pid in its pid file
#   cluster.sh can         exit 0 when this machine can run it (root, and the packages or apt-get)
# The node has two fake GPUs (character devices) declared through GRES, so `--gres=gpu:1` jobs see
# CUDA_VISIBLE_DEVICES=0 or 1. Nothing outside DIR is written except by the package install.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)

can() {
    [ "$(id -u)" = 0 ] || { echo "not root"; return 1; }
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || { echo "no Slurm packages and no apt-get"; return 1; }
}

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return 0
    echo "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${packages[@]}" >"$dir/apt.log" 2>&1; then
        apt-get update >>"$dir/apt.log" 2>&1
        apt-get install -y --no-install-recommends "${packages[@]}" >>"$dir/apt.log" 2>&1 \
            || { tail -20 "$dir/apt.log"; exit 1; }
    fi
}

alive() { # pid: a process that exists and is not a zombie
    [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

stop_pid_file() {
    local file=$1 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
    echo "cannot stop pid $pid ($file)" >&2
    return 1
}

start() {
    mkdir -p "$dir"/{state,spool,log,dev}
    install
    local host conf node
    host=$(hostname -s)
    chmod 0700 "$dir"
    # munge: a key and a socket of our own; root runs it (--force accepts that).
    [ -s "$dir/munge.key" ] || { dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 2>/dev/null; chmod 0400 "$dir/munge.key"; }
    munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"
    MUNGE_SOCKET="$dir/munge.socket"
    munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null
    for i in 0 1; do [ -c "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 1 3; done
    node=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //')
    conf="$dir/slurm.conf"
    cat >"$conf" <<CONF
ClusterName=ddpmtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-16817}
SlurmdPort=${SLURMD_PORT:-16818}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket,cred_expire=${CRED_EXPIRE:-10}
MailProg=/bin/true
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
NodeName=$host $node NodeAddr=127.0.0.1 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/nvidia[0-1]\n' "$host" "$dir" >"$dir/gres.conf"
    export SLURM_CONF=$conf
    slurmctld -f "$conf"
    slurmd -f "$conf"
    for _ in $(seq 300); do
        state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
        case "$state" in
            idle) echo "slurm: node $host idle (SLURM_CONF=$conf)"; return 0 ;;
            drain*|down*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.1
    done
    echo "slurm: the node did not become idle (state: ${state:-none}); logs in $dir/log" >&2
    tail -5 "$dir"/log/*.log >&2 || true
    return 1
}

stop() {
    export SLURM_CONF="$dir/slurm.conf"
    local ok=0
    if [ -s "$dir/slurmctld.pid" ] && alive "$(cat "$dir/slurmctld.pid")"; then
        scancel --full --quiet --user=root 2>/dev/null || true
        for _ in $(seq 150); do
            [ -z "$(squeue -h -t all -o '%i %T' 2>/dev/null | grep -vE 'COMPLETED|CANCELLED|FAILED|TIMEOUT|PREEMPTED|NODE_FAIL|OUT_OF_MEMORY' || true)" ] && break
            sleep 0.2
        done
    fi
    stop_pid_file "$dir/slurmd.pid" || ok=1
    stop_pid_file "$dir/slurmctld.pid" || ok=1
    stop_pid_file "$dir/munged.pid" || ok=1
    return $ok
}

case "${1:-}" in
    can) can ;;
    start) dir=$(realpath -m "$2"); start ;;
    stop) dir=$(realpath -m "$2"); stop ;;
    *) echo "usage: $0 can | start DIR | stop DIR" >&2; exit 2 ;;
esac
