#!/usr/bin/env bash
# Stop the daemons that start_slurm.sh STATE_DIR started (listed in STATE_DIR/started), by PID,
# newest first: cancel the cluster's jobs, then slurmd, slurmctld and (if it started one) munged.
# A PID whose process is no longer the daemon it was recorded as is left alone. Then it removes
# the /etc/slurm links into STATE_DIR.
set -u
STATE=${1:?usage: stop_slurm.sh STATE_DIR}
[ -s "$STATE/started" ] || exit 0
if [ -s "$STATE/slurm.conf" ] && command -v scancel >/dev/null; then
  SLURM_CONF="$STATE/slurm.conf" timeout 10 scancel --state=PENDING,RUNNING,SUSPENDED --full \
    -u "$(id -un)" 2>/dev/null || true
fi
tac "$STATE/started" | while read -r name pid; do
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" != "$name" ]; then
    echo "$name ($pid) was not running"
    continue
  fi
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name ($pid) ignored SIGTERM, sending SIGKILL"
    kill -9 "$pid"
  fi
  echo "stopped $name ($pid)"
done
: > "$STATE/started"
# the /etc/slurm links start_slurm.sh made into this state dir
for f in slurm.conf gres.conf; do
  [ "$(readlink "/etc/slurm/$f" 2>/dev/null)" = "$(cd "$STATE" && pwd)/$f" ] && rm -f "/etc/slurm/$f"
done
