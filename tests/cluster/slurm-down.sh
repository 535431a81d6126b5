#!/usr/bin/env bash
# Stop the single-node CI cluster that tests/cluster/slurm-up.sh started: cancel remaining jobs, then stop
# slurmd, slurmctld, slurmdbd, MariaDB and munged by their pid files. Safe to call twice or when nothing runs.
#   --purge   also wipe SLURM's state, the job-completion record and the daemon logs (a fresh cluster next time).
# Packages stay installed. Always exits 0 (it runs from a CI trap).
set -uo pipefail
BASE=/var/spool/slurm-ci
RUN=/run/slurm-ci
LOG=/var/log/slurm-ci
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$RUN/slurmctld.pid"; then
    ids=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$ids" ]; then
        echo "slurm-down: cancelling jobs" $ids >&2
        scancel $ids 2>/dev/null
        for _ in $(seq 75); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
fi
for pf in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" "$RUN/slurmdbd.pid" /run/mysqld/mysqld.pid /run/munge/munged.pid; do
    alive "$pf" || { rm -f "$pf"; continue; }
    pid=$(cat "$pf")
    kill "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { echo "slurm-down: SIGKILL $pf" >&2; kill -KILL "$pid" 2>/dev/null; }
    rm -f "$pf"
done
if [ "${1:-}" = --purge ]; then
    rm -rf "$BASE" "$LOG"
fi
echo "slurm-down: stopped" >&2
exit 0
