#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost (munged + slurmctld + slurmd) from cluster/slurm.conf.in.
# Everything lives under $EEBENCH_CLUSTER_DIR (default .eebench/cluster); each daemon writes a pid file there
# and cluster/stop.sh stops exactly those pids. Needs Debian's slurm-wlm and munge and root (slurmd runs jobs).
# Prints the `export SLURM_CONF=...` line that points sbatch/squeue (and eebench) at this cluster.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${EEBENCH_CLUSTER_DIR:-$here/../.eebench/cluster}"
mkdir -p "$dir" && dir="$(cd "$dir" && pwd)"
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "cluster/start.sh: $tool not found; install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)" >&2; exit 1; }
done
if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  echo "cluster already running (slurmctld pid $(cat "$dir/slurmctld.pid")); stop it with cluster/stop.sh"
  echo "export SLURM_CONF=$dir/slurm.conf"
  exit 0
fi
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"
[ -s "$dir/munge/munge.key" ] || { dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$dir/munge/munge.key"; }
: > "$dir/plugstack.conf"
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
sed -e "s|@DIR@|$dir|g" -e "s|@HOST@|$(hostname -s)|g" -e "s|@USER@|$(id -un)|g" \
    -e "s|@CPUS@|$(nproc)|g" -e "s|@MEM_MB@|$mem_mb|g" -e "s|@PARTITION@|${EEBENCH_CLUSTER_PARTITION:-debug}|g" \
    -e "s|@CTLD_PORT@|${EEBENCH_CLUSTER_CTLD_PORT:-6817}|g" -e "s|@SLURMD_PORT@|${EEBENCH_CLUSTER_SLURMD_PORT:-6818}|g" \
    "$here/slurm.conf.in" > "$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"
munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
slurmctld -f "$SLURM_CONF"   # forks; writes SlurmctldPidFile
slurmd -f "$SLURM_CONF"      # forks; writes SlurmdPidFile
for _ in $(seq 60); do
  if sinfo -h -o "%t" 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "SLURM cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t'); logs in $dir/log"
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
echo "cluster/start.sh: the node did not come up in 30 s; see $dir/log/slurmctld.log and slurmd.log" >&2
"$here/stop.sh" >&2 || true
exit 1
