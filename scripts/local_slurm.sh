#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try rnnflow's cluster path (hydra/launcher=slurm).
#
#   sudo apt-get install slurmctld slurmd slurm-client munge     # Debian/Ubuntu packages, once
#   sudo scripts/local_slurm.sh up [DIR]      # start munged, slurmctld, slurmd; wait for the node
#   export SLURM_CONF=DIR/slurm.conf          # (printed by `up`) then sinfo, sbatch, train.py -m ...
#   sudo scripts/local_slurm.sh down [DIR]    # cancel the jobs, stop the three daemons
#
# DIR (default /tmp/rnnflow-slurm, or $LOCAL_SLURM_DIR) holds everything: slurm.conf, a fresh munge
# key and socket, the controller's state, spool dirs, pid files and logs; nothing is written to /etc
# and no systemd unit is used. The node is this machine with its CPUs and memory (from `slurmd -C`),
# in one partition `local`. Processes are tracked without cgroups (proctrack/linuxproc), so it works
# in containers. Ports are free ones chosen at `up` (SLURMCTLD_PORT / SLURMD_PORT to fix them).
# The daemons run as root, like on a real cluster (slurmd starts jobs as the submitting user).
# There is no accounting database: `sacct` does not work here (submitit then relies on its result
# files, which every finished, failed or requeued rnnflow job writes).
#
# `up` exits 0 when the node is idle, 3 when SLURM is not installed, 1 when a daemon fails to start
# (its log is printed). The last line of `up` is `export SLURM_CONF=...`.
set -euo pipefail

command_name=${1:-}
dir=${2:-${LOCAL_SLURM_DIR:-/tmp/rnnflow-slurm}}
partition=local
node=$(hostname -s)  # the node name is the host name: DDP ranks reach rank 0 by it

die() {
  echo "local_slurm: $*" >&2
  exit 1
}

stop_pid_file() { # stop_pid_file FILE NAME: TERM, wait up to 15 s, then KILL
  local file=$1 name=$2 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "local_slurm: $name ($pid) did not stop on SIGTERM: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

down() {
  [[ -d $dir ]] || return 0
  if [[ -f $dir/slurm.conf && -f $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF=$dir/slurm.conf
    # Cancel every job of this cluster, then give the job steps time to end (KillWait is 10 s here).
    scancel --full --quiet --partition="$partition" 2>/dev/null || true
    for _ in $(seq 100); do
      [[ -z $(squeue --noheader --format=%i 2>/dev/null | head -1) ]] && break  # none pending or running
      sleep 0.2
    done
  fi
  stop_pid_file "$dir/slurmd.pid" slurmd
  stop_pid_file "$dir/slurmctld.pid" slurmctld
  stop_pid_file "$dir/munged.pid" munged
  echo "local_slurm: stopped ($dir)"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

show_log() {
  echo "--- $1 (last lines) ---" >&2
  tail -n 20 "$1" >&2 2>/dev/null || true
}

up() {
  local missing=()
  for tool in munged slurmctld slurmd sinfo sbatch scontrol; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "local_slurm: not installed: ${missing[*]} (apt-get install slurmctld slurmd slurm-client munge)" >&2
    exit 3
  fi
  [[ $(id -u) == 0 ]] || die "the daemons must run as root (sudo $0 up)"
  export PATH=$PATH:/usr/sbin
  down >/dev/null
  rm -rf "$dir"
  mkdir -p "$dir"/{state,spool,munge}
  chmod 700 "$dir/munge"
  dir=$(cd "$dir" && pwd)

  # munge: a fresh key and a socket of our own (no /etc/munge, no system munged needed).
  head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  chmod 400 "$dir/munge/munge.key"
  munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed" ||
    {
      show_log "$dir/munged.log"
      die "munged did not start"
    }
  # munged's socket is for every local user (jobs and clients authenticate through it).
  chmod 755 "$dir" "$dir/munge"

  # This machine as the one node: `slurmd -C` prints its CPUs, sockets, cores, threads and memory.
  local hw memory
  hw=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *UpTime=.*//')
  memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  # Leave the system a little memory; SLURM refuses a node with less than it was configured with.
  hw=$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$hw")
  local ctld_port=${SLURMCTLD_PORT:-$(free_port)} slurmd_port=${SLURMD_PORT:-$(free_port)}
  cat >"$dir/slurm.conf" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster for trying rnnflow's SLURM path.
ClusterName=rnnflow-local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups needed: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# Cores and memory are consumable: several 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
# Schedule every 2 s (default 60 s main, 30 s backfill): requeued jobs restart promptly.
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
MailProg=/bin/true
JobRequeue=1
KillWait=10
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
NodeName=$node NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=$partition Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 644 "$dir/slurm.conf"
  export SLURM_CONF=$dir/slurm.conf

  slurmctld -i -f "$SLURM_CONF" || {
    show_log "$dir/slurmctld.log"
    die "slurmctld did not start"
  }
  slurmd -N "$node" -f "$SLURM_CONF" || {
    show_log "$dir/slurmd.log"
    die "slurmd did not start"
  }
  # Wait until the node is idle (registered and schedulable).
  local state=""
  for _ in $(seq 300); do
    state=$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.2
  done
  if [[ $state != idle ]]; then
    show_log "$dir/slurmctld.log"
    show_log "$dir/slurmd.log"
    die "node $node not idle after 60 s (state: ${state:-none})"
  fi
  sinfo --format="%P %D %T %c %m" --noheader | sed "s/^/local_slurm: up: partition /"
  echo "export SLURM_CONF=$SLURM_CONF"
}

case $command_name in
up) up ;;
down) down ;;
*)
  echo "usage: $0 up|down [DIR]" >&2
  exit 2
  ;;
esac
