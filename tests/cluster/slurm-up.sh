#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on localhost for the cluster tests (tests/test_cluster_slurm.py).
#
# Installs Debian's SLURM (bookworm: 22.05) and munge if missing, writes /etc/slurm/slurm.conf, starts munged,
# slurmctld and slurmd as root (no systemd needed), and returns only once a job has really run (srun).
# Idempotent: a second call with the cluster up and the configuration unchanged only re-proves readiness.
# Needs root. Stop it with tests/cluster/slurm-down.sh.
#
# Environment:
#   SLURM_CI_ACCOUNTING  none (default): no accounting database; `sacct` does not work, so the profile
#                          profiles/slurm-ci uses `slurm-status-command: squeue` (kept honest by MinJobAge).
#                          Every finished job is still recorded, one line each, by jobcomp/filetxt in
#                          /var/spool/slurm-ci/jobcomp.log (JobCompLoc), whichever the accounting.
#                        dbd: also MariaDB + slurmdbd so that `sacct` works (the plugin's default status command).
#   SLURM_CI_CPUS        CPUs the node declares (default 4). More than the real cores is deliberate: a
#                          `group:` job sums the CPUs of its parallel members, and a request larger than the
#                          node would pend forever (Reason=PartitionConfig).
#   SLURM_CI_GPUS        GPUs the node declares (default 1), as GRES gpu of type "ci" with no device file
#                          behind it: enough for SLURM to schedule and account a job that asks for a GPU
#                          (--gpus=1, --gpus=ci:1, --gres=gpu:1), so the tests can check the requests the rules
#                          make; nothing in such a job can use a real GPU. 0 declares none.
#                          The node is in two partitions: debug (default) and, with GPUs, gpu.
#
# Prints the seconds it took on its last line ("slurm-up: ready in N s").
set -euo pipefail

START=$(date +%s.%N)
CPUS=${SLURM_CI_CPUS:-4}
GPUS=${SLURM_CI_GPUS:-1}
ACCT=${SLURM_CI_ACCOUNTING:-none}
NODE=$(hostname -s)
BASE=/var/spool/slurm-ci
RUN=/run/slurm-ci
LOG=/var/log/slurm-ci
JOBCOMP=$BASE/jobcomp.log
MEM=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)

say() { echo "slurm-up: $*" >&2; }
die() {
    say "$*"
    for f in "$LOG"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # wait_for <tries> <sleep> <command...>: true once the command succeeds
    local n=$1 s=$2; shift 2
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep "$s"; done
    return 1
}
start_daemon() { # start_daemon <pidfile> <command...>: unless running; fail fast if it dies at start
    local pf=$1; shift
    alive "$pf" && return 0
    "$@" || die "$1 did not start"
    wait_for 50 0.1 alive "$pf" || die "$1 exited right after it started"
}
stop_pid() { # stop_pid <pidfile>: SIGTERM, wait up to 20 s, then SIGKILL
    alive "$1" || return 0
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons)"
case "$ACCT" in none | dbd) ;; *) die "SLURM_CI_ACCOUNTING must be none or dbd, not '$ACCT'" ;; esac
case "$GPUS" in '' | *[!0-9]*) die "SLURM_CI_GPUS must be a count, not '$GPUS'" ;; esac

# --- packages ---------------------------------------------------------------------------------------------
PKGS="slurmctld slurmd slurm-client munge"
[ "$ACCT" = dbd ] && PKGS="$PKGS slurmdbd mariadb-server"
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
missing=$(for p in $PKGS; do installed "$p" || echo "$p"; done)
if [ -n "$missing" ]; then
    say "installing" $missing
    export DEBIAN_FRONTEND=noninteractive
    # the package scripts try to start services; without systemd they only warn (policy-rc.d), we start them below
    apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    }
fi

# --- configuration ------------------------------------------------------------------------------------------
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts
mkdir -p "$BASE/ctld" "$BASE/d" "$RUN" "$LOG" /etc/slurm
STORAGE=$([ "$ACCT" = dbd ] && echo slurmdbd || echo none)
GRES_LINE="" NODE_GRES="" GPU_PARTITION=""
if [ "$GPUS" -gt 0 ]; then
    GRES_LINE=GresTypes=gpu
    NODE_GRES="Gres=gpu:ci:$GPUS"
    GPU_PARTITION="PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP"
fi
# GPUs without a GPU behind them: gres/gpu wants one character device per GPU; links to /dev/null do. SLURM schedules,
# binds (CUDA_VISIBLE_DEVICES) and records them; nothing can compute on them.
if [ "$GPUS" -gt 0 ]; then
    for i in $(seq 0 $((GPUS - 1))); do ln -sfn /dev/null "$BASE/fake-gpu$i"; done
    echo "NodeName=$NODE Name=gpu Type=ci File=$BASE/fake-gpu[0-$((GPUS - 1))]" >/etc/slurm/gres.conf.new
else
    : >/etc/slurm/gres.conf.new
fi

cat >/etc/slurm/slurm.conf.new <<EOF
# Written by tests/cluster/slurm-up.sh: a single-node CI cluster. Do not edit by hand.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/$STORAGE
# every finished job, one line each, with or without an accounting database: the tests read it
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue for 10 min: the plugin's squeue status check relies on it
MinJobAge=600
# scancel: SIGTERM, then SIGKILL after KillWait seconds
KillWait=5
DefMemPerCPU=500
$GRES_LINE
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM $NODE_GRES State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
$GPU_PARTITION
EOF
changed=0
for f in slurm.conf gres.conf; do
    cmp -s "/etc/slurm/$f.new" "/etc/slurm/$f" || changed=1
    mv "/etc/slurm/$f.new" "/etc/slurm/$f"
done

# --- munge --------------------------------------------------------------------------------------------------
[ -s /etc/munge/munge.key ] || mungekey --create --force
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
munge_ok() { munge -n | unmunge; }
if ! munge_ok >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    wait_for 50 0.1 munge_ok || die "munged did not start"
fi

# --- accounting database (optional) ------------------------------------------------------------------------
if [ "$ACCT" = dbd ]; then
    if ! mariadb -e 'select 1' >/dev/null 2>&1; then
        mkdir -p /run/mysqld
        chown mysql:mysql /run/mysqld
        setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
            --pid-file=/run/mysqld/mysqld.pid >"$LOG/mariadb.log" 2>&1 </dev/null &
        wait_for 150 0.2 mariadb -e 'select 1' || die "MariaDB did not start"
    fi
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
      CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    printf '%s\n' AuthType=auth/munge DbdHost=localhost SlurmUser=root \
        StorageType=accounting_storage/mysql StorageHost=127.0.0.1 StorageUser=slurm \
        StoragePass=slurm StorageLoc=slurm_acct_db "PidFile=$RUN/slurmdbd.pid" \
        "LogFile=$LOG/slurmdbd.log" >/etc/slurm/slurmdbd.conf.new
    chmod 600 /etc/slurm/slurmdbd.conf.new
    cmp -s /etc/slurm/slurmdbd.conf.new /etc/slurm/slurmdbd.conf || stop_pid "$RUN/slurmdbd.pid"
    mv /etc/slurm/slurmdbd.conf.new /etc/slurm/slurmdbd.conf
    start_daemon "$RUN/slurmdbd.pid" slurmdbd
    wait_for 150 0.2 sacctmgr -n list cluster || die "slurmdbd does not answer"
    sacctmgr -n -P list cluster format=cluster | grep -qx ci || sacctmgr -i add cluster ci >/dev/null
fi

# --- slurmctld + slurmd -------------------------------------------------------------------------------------
if [ $changed = 1 ]; then # node, accounting or timing changes need a daemon restart
    stop_pid "$RUN/slurmd.pid"
    stop_pid "$RUN/slurmctld.pid"
fi
start_daemon "$RUN/slurmctld.pid" slurmctld
ctld_up() { timeout 5 scontrol ping | grep -q 'is UP'; }
wait_for 100 0.2 ctld_up || die "slurmctld does not answer"
start_daemon "$RUN/slurmd.pid" slurmd -N "$NODE"

state=
for _ in $(seq 120); do
    state=$(timeout 5 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in
    idle | mixed | allocated | completing) break ;;
    down* | drain* | fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in idle | mixed | allocated | completing) ;; *) die "node $NODE is '$state', not usable" ;; esac
# sinfo can report idle before slurmd re-registered after a restart: prove that a job really runs
out=$(timeout 60 srun -N1 -n1 -t 1 --job-name=slurm-up-probe echo ran-on-slurm 2>"$LOG/probe.err") ||
    die "node $NODE not usable (state '$state'): $(cat "$LOG/probe.err")"
[ "$out" = ran-on-slurm ] || die "srun probe printed '$out' $(cat "$LOG/probe.err")"

sinfo >&2
awk -v a="$START" -v b="$(date +%s.%N)" -v acct="$ACCT" -v jc="$JOBCOMP" \
    'BEGIN { printf "slurm-up: ready in %.1f s (accounting=%s, jobcomp=%s)\n", b - a, acct, jc }'
