#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster (slurmctld + slurmd, + munged if none runs) on
# 127.0.0.1 for the integration tests. Debian 12 / SLURM 22.05, no systemd, no cgroups, as root.
#
#   tests/workflow/slurm/start_slurm.sh STATE_DIR        # then: export SLURM_CONF=STATE_DIR/slurm.conf
#
# Everything the cluster writes (slurm.conf, gres.conf, spool, logs, pid files, fake GPU device
# nodes) lives in STATE_DIR. /etc/slurm/slurm.conf and gres.conf become symlinks to it, because a
# job step's `srun` reads only the default path (snakemake's jobstep plugin drops SLURM_CONF from
# its environment); an /etc/slurm/slurm.conf that this script did not write means a real cluster
# is configured on the host, and the script refuses to run (exit 3).
# STATE_DIR/started lists "name pid" for each daemon THIS call started; stop_slurm.sh stops exactly
# those, by PID. Exit status 3 means "cannot run here" (the reason is the last line on stderr).
#
# Env knobs:
#   FAKE_GPUS=N   GPUs declared as GRES gpu:fake:N, backed by device nodes cloned from /dev/null (2)
#   INSTALL=auto  apt-get install slurm-wlm + munge when a daemon binary is missing (auto|1|0)
#   PORT=16817    slurmctld port (slurmd uses PORT+1); not 6817, so a host's own SLURM is left alone
set -euo pipefail
STATE=${1:?usage: start_slurm.sh STATE_DIR}
FAKE_GPUS=${FAKE_GPUS:-2}
INSTALL=${INSTALL:-auto}
PORT=${PORT:-16817}
export DEBIAN_FRONTEND=noninteractive

cannot() { echo "start_slurm: $*" >&2; exit 3; }
die() {
  echo "start_slurm: $*" >&2
  for f in "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log; do
    [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; } >&2
  done
  exit 1
}
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }   # $1 = pid file
started() { echo "$1 $(cat "$2")" >> "$STATE/started"; }         # $1 = name, $2 = pid file

[ "$(id -u)" = 0 ] || cannot "needs root (slurmd runs jobs as their user and must be root)"
have_bins() { [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]; }
if [ "$INSTALL" = 1 ] || { [ "$INSTALL" = auto ] && ! have_bins; }; then
  command -v apt-get >/dev/null || cannot "SLURM is not installed and there is no apt-get to install it"
  apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
fi
have_bins || cannot "slurmctld/slurmd/munged not found (apt-get install slurm-wlm munge)"

mkdir -p "$STATE"/{log,spool/ctld,spool/d,run}
STATE=$(cd "$STATE" && pwd)
touch "$STATE/started"
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 85 / 100 ))   # 85% of RAM

# ---- munge: the host's daemon and key (slurm's auth); start one only if none answers -----------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge; chmod 600 /etc/munge/munge.key; chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged             # daemonizes; pid in /run/munge/munged.pid
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munged did not come up"
  started munged /run/munge/munged.pid
fi

# ---- fake GPUs: slurmd only checks that the device files exist -------------------------------
GRES_NODE=""; GRES_TYPES=""
rm -f "$STATE/gres.conf"
if [ "$FAKE_GPUS" -gt 0 ]; then
  mkdir -p "$STATE/dev"
  for i in $(seq 0 $((FAKE_GPUS - 1))); do
    [ -e "$STATE/dev/gpu$i" ] || mknod "$STATE/dev/gpu$i" c 1 3 || cannot "mknod not permitted here"
  done
  printf 'AutoDetect=off\nNodeName=%s Name=gpu Type=fake File=%s/dev/gpu[0-%d]\n' \
    "$NODE" "$STATE" $((FAKE_GPUS - 1)) > "$STATE/gres.conf"
  GRES_NODE="Gres=gpu:fake:$FAKE_GPUS"
  GRES_TYPES="GresTypes=gpu"
fi

MARK="# written by adm-bench tests/workflow/slurm/start_slurm.sh"
if [ -e /etc/slurm/slurm.conf ] && ! head -n 1 /etc/slurm/slurm.conf | grep -qF "$MARK"; then
  cannot "/etc/slurm/slurm.conf belongs to a real SLURM setup on this host; not replacing it"
fi

cat > "$STATE/slurm.conf" <<CONF
$MARK (throw-away test cluster, state in $STATE)
ClusterName=admbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmdSpoolDir=$STATE/spool/d
StateSaveLocation=$STATE/spool/ctld
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
$GRES_TYPES
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol for an hour: the snakemake plugin's squeue status
# mode needs MinJobAge >= 3 x --slurm-init-seconds-before-status-checks, and the tests read the
# finished jobs' GPU requests back with scontrol.
MinJobAge=3600
InactiveLimit=0
# a killed job gets SIGTERM, then SIGKILL 5 s later (the fault test waits for it)
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /etc/slurm
ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf
if [ -e "$STATE/gres.conf" ]; then ln -sfn "$STATE/gres.conf" /etc/slurm/gres.conf; else rm -f /etc/slurm/gres.conf; fi
export SLURM_CONF="$STATE/slurm.conf"

# ---- slurmctld + slurmd ------------------------------------------------------------------------
for d in slurmctld slurmd; do
  alive "$STATE/run/$d.pid" && continue
  /usr/sbin/$d -f "$SLURM_CONF" || die "$d did not start"         # daemonizes; writes its pid file
  for _ in $(seq 1 40); do [ -s "$STATE/run/$d.pid" ] && break; sleep 0.25; done
  alive "$STATE/run/$d.pid" || die "$d died at start"
  started "$d" "$STATE/run/$d.pid"
done
st=""
for _ in $(seq 1 60); do
  st=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in idle*|mix*|alloc*) break;; esac
  sleep 0.5
done
case "$st" in idle*|mix*|alloc*) ;; *) die "node $NODE not usable ($st): $(scontrol show node "$NODE" | grep -i reason)";; esac
sinfo -o "%P %a %l %D %T %N %G"
