#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the `slurm_*` tests (tests/it/slurm.rs): Debian's slurm-wlm and
# munge, a slurm.conf for localhost with every CPU of the machine and no cgroups (containers and CI machines rarely
# delegate cgroups), then munged, slurmctld and slurmd, started only when not already answering. Idempotent; runs
# as root on Debian. Ends with the node idle, or exits non-zero saying why (the tests then fail with that reason).
set -euo pipefail

say() { printf '[slurm-setup] %s\n' "$*" >&2; }
fail() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs slurm-wlm and munge and starts their daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
  || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || fail "apt-get install slurm-wlm munge failed"
fi

# munge: a key, its directories, and the daemon (slurm authenticates every request through it).
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || fail "munge does not answer after starting munged (see /var/log/munge/munged.log)"
fi

host="$(hostname -s)"
cpus="$(nproc)"
# Slurm drains a node that has less memory than configured: claim 90% of what the machine has.
mem_mb="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
conf=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
new="$(cat <<EOF
# Written by stasc's scripts/slurm/setup.sh: a one-node cluster on localhost for the tests.
ClusterName=stasc
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=3600
SlurmctldTimeout=300
KillWait=5
MinJobAge=300
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
)"
changed=0
if [ "$(cat "$conf" 2>/dev/null)" != "$new" ]; then
  say "writing $conf (node $host, $cpus CPUs, $mem_mb MB)"
  printf '%s\n' "$new" > "$conf.tmp" && mv "$conf.tmp" "$conf"
  changed=1
fi

stop() { # $1: pid file
  if [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; then
    kill "$(cat "$1")"
    for _ in $(seq 50); do kill -0 "$(cat "$1")" 2>/dev/null || break; sleep 0.1; done
  fi
}
if [ "$changed" = 1 ]; then
  stop /run/slurmd.pid
  stop /run/slurmctld.pid
fi
if ! scontrol ping 2>/dev/null | grep -q 'is UP'; then
  say "starting slurmctld"
  slurmctld || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
  scontrol ping | grep -q 'is UP' || fail "slurmctld does not answer (see /var/log/slurm/slurmctld.log)"
fi
if ! { [ -s /run/slurmd.pid ] && kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; }; then
  say "starting slurmd"
  slurmd || fail "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi

# The node must be idle (or already running jobs) before tests submit to it.
state=""
for _ in $(seq 150); do
  state="$(sinfo -h -n "$host" -o '%t' 2>/dev/null | head -n1)"
  case "$state" in
    idle|mix|alloc) break ;;
    down*|drain*|drng*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.2
done
case "$state" in
  idle|mix|alloc) say "one-node cluster ready: node $host $state, $cpus CPUs" ;;
  *) fail "node $host is '${state:-unknown}', not idle (see /var/log/slurm/slurmd.log and slurmctld.log; sinfo -R says: $(sinfo -h -R 2>&1 | head -n1))" ;;
esac
