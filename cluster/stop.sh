#!/usr/bin/env bash
# Stop the cluster cluster/start.sh started: exactly the pids in its pid files (slurmd, slurmctld, munged).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${EEBENCH_CLUSTER_DIR:-$here/../.eebench/cluster}"
for name in slurmd slurmctld munged; do
  pidfile="$dir/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done
