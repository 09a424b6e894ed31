#!/usr/bin/env bash
# A one-node SLURM "cluster" on this machine, for testing `python -m shiplib sweep --launcher slurm`.
#
#   scripts/slurm_local.sh start    install slurm-wlm + munge with apt-get if missing (needs root), write a minimal
#                                   slurm.conf, start munged, slurmctld and slurmd; prints `export SLURM_CONF=…`
#   scripts/slurm_local.sh stop     stop exactly the daemons this script started (their pid files)
#   scripts/slurm_local.sh status   which of them run, and `sinfo`
#
# Everything lives in $SHIPLIB_SLURM_DIR (default /tmp/shiplib-slurm): slurm.conf, munge key and socket, state,
# logs and pid files. No systemd. One node = `hostname -s`, CPUs = nproc, RealMemory from `free`, one partition
# `debug` (Default=YES), no accounting. Point slurm commands at it with SLURM_CONF=$SHIPLIB_SLURM_DIR/slurm.conf.
set -euo pipefail

DIR="${SHIPLIB_SLURM_DIR:-/tmp/shiplib-slurm}"
CTLD_PORT="${SHIPLIB_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SHIPLIB_SLURMD_PORT:-6818}"
CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"

log() { echo "slurm_local: $*" >&2; }

alive() {  # alive <pid file>
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
            && command -v munged >/dev/null; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "slurm-wlm/munge are missing and installing them needs root (apt-get install slurm-wlm munge)"
        return 3
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q slurm-wlm munge >"$DIR/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        if ! apt-get install -y -q slurm-wlm munge >>"$DIR/apt.log" 2>&1; then
            log "apt-get could not install slurm-wlm munge (see $DIR/apt.log)"
            return 3
        fi
    fi
}

write_config() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem="$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/log"
    cat >"$CONF" <<EOF
# written by scripts/slurm_local.sh
ClusterName=shiplib
SlurmctldHost=$host
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    mkdir -p "$DIR"
    install_packages
    if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && alive "$DIR/munged.pid"; then
        log "already running ($DIR)"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    stop >/dev/null 2>&1 || true
    write_config
    # munge: our own key (created once) and socket, so the system's munge setup is left alone
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
    fi
    chmod 700 "$DIR/munge"
    chmod 400 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
    export SLURM_CONF="$CONF"
    slurmctld -i
    slurmd
    # ready when the node is idle
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then
            log "running: one node $(hostname -s), partition debug ($DIR)"
            echo "export SLURM_CONF=$CONF"
            return 0
        fi
        sleep 0.5
    done
    log "daemons started but the node is not idle after 30 s; see $DIR/log/"
    sinfo >&2 || true
    return 1
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        if alive "$DIR/$name.pid"; then
            pid="$(cat "$DIR/$name.pid")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
            log "stopped $name ($pid)"
        fi
        rm -f "$DIR/$name.pid"
    done
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if alive "$DIR/$name.pid"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"
        else echo "$name: stopped"; rc=1; fi
    done
    if [[ $rc -eq 0 ]]; then SLURM_CONF="$CONF" sinfo || rc=1; fi
    echo "export SLURM_CONF=$CONF"
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
