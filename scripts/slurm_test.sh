#!/usr/bin/env bash
# `make slurm-test`: a 4-job grid through hydra/launcher=submitit_slurm on a real SLURM,
# a single-node cluster on this host with its accounting database (slurmdbd on a private
# MariaDB, so that sacct, which submitit asks for job states, answers), written to a
# tracking server (make server); then the check that the four jobs are ok children of one
# parent run; then a run preempted (USR2) after its first checkpoint must continue it when
# requeued. Opt-in, not in CI: it needs root (apt-get, and munged/slurmctld/slurmd run as
# daemons) on a Debian or Ubuntu host.
#
# Everything it starts (munged unless one is already running, MariaDB, slurmdbd, slurmctld,
# slurmd, the tracking server) is stopped at the end; its config, logs and results stay in
# $SLURM_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

SLURM_DIR=${SLURM_DIR:-/tmp/physbench-slurm}
PARTITION=${PARTITION:-physbench}
PORT=${PORT:-5077}
DB_PORT=${DB_PORT:-3407}
VENV=${VENV:-.venv}
BIN=$VENV/bin
GRID=${GRID:-"+method=pinn +problem=burgers seed=0,1,2,3 budget=smoke eval.figures=false"}

say() { echo "slurm-test: $*"; }
die() { echo "slurm-test: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (it installs slurm-wlm and munge and starts their \
daemons); run it as root on a machine you may change, e.g. a throw-away VM or container"
[ -x "$BIN/bench" ] || die "no $BIN/bench: run 'make setup' first"

PACKAGES="slurm-wlm slurmdbd munge mariadb-server"
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
  || ! command -v munged >/dev/null || ! command -v mariadbd >/dev/null; then
  command -v apt-get >/dev/null || die "SLURM, munge or MariaDB is missing and there is no \
apt-get: install $PACKAGES (or their equivalents) with this system's package manager"
  say "installing $PACKAGES (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $PACKAGES
fi

rm -rf "$SLURM_DIR"
mkdir -p "$SLURM_DIR"/{state,spool,results,db}
STARTED=()  # pid files of what this script started; a negative pid names a process group
cleanup() {  # in the reverse order of starting
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    pidfile=${STARTED[i]}
    if [ -f "$pidfile" ]; then
      say "stopping $(basename "$pidfile" .pid) ($(cat "$pidfile"))"
      kill -- "$(cat "$pidfile")" || true
      for _ in $(seq 20); do  # until it (or its whole group) has gone
        kill -0 -- "$(cat "$pidfile")" 2>/dev/null || break
        sleep 0.5
      done
    fi
  done
}
trap cleanup EXIT

# munge: the key the package made, its socket directory, the daemon as the munge user.
if ! pgrep -x munged >/dev/null; then
  [ -f /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || \
    /usr/sbin/create-munge-key -f; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  STARTED+=(/run/munge/munged.pid)
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# The accounting database: a MariaDB of its own in $SLURM_DIR, on 127.0.0.1 only.
chown mysql:mysql "$SLURM_DIR/db"
mariadb-install-db --user=mysql --datadir="$SLURM_DIR/db/data" \
  --auth-root-authentication-method=socket >"$SLURM_DIR/db/install.log" 2>&1 \
  || die "mariadb-install-db failed; see $SLURM_DIR/db/install.log"
setsid /usr/sbin/mariadbd --user=mysql --datadir="$SLURM_DIR/db/data" \
  --socket="$SLURM_DIR/db/mysql.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
  --pid-file="$SLURM_DIR/db/mariadb.pid" --log-error="$SLURM_DIR/db/mariadb.err" \
  >>"$SLURM_DIR/db/mariadb.err" 2>&1 &
STARTED+=("$SLURM_DIR/db/mariadb.pid")
for _ in $(seq 60); do [ -S "$SLURM_DIR/db/mysql.sock" ] && break; sleep 0.5; done
mariadb --socket="$SLURM_DIR/db/mysql.sock" -u root -e "CREATE USER 'slurm'@'127.0.0.1' \
IDENTIFIED BY 'physbench'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
  || die "MariaDB did not start; see $SLURM_DIR/db/mariadb.err"

# slurm.conf for this host: slurmd -C reports its CPUs and memory.
HOST=$(hostname -s)
NODE=$(slurmd -C | head -1)
NODENAME=$(sed -n 's/^NodeName=\(\S*\).*/\1/p' <<<"$NODE")
export SLURM_CONF=$SLURM_DIR/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=physbench
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODENAME Default=YES MaxTime=INFINITE State=UP
EOF
say "slurm.conf for $HOST: $NODE"
cat >"$SLURM_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$SLURM_DIR/slurmdbd.log
PidFile=$SLURM_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=physbench
StorageLoc=slurm_acct_db
EOF
chmod 600 "$SLURM_DIR/slurmdbd.conf"

# slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF
/usr/sbin/slurmdbd && STARTED+=("$SLURM_DIR/slurmdbd.pid")
for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
sacctmgr -n list cluster >/dev/null || die "slurmdbd did not start; see $SLURM_DIR/slurmdbd.log"
sacctmgr -i add cluster physbench >/dev/null

/usr/sbin/slurmctld -f "$SLURM_CONF" && STARTED+=("$SLURM_DIR/slurmctld.pid")
/usr/sbin/slurmd -f "$SLURM_CONF" && STARTED+=("$SLURM_DIR/slurmd.pid")
for _ in $(seq 60); do
  sinfo -h -o "%t" -p "$PARTITION" 2>/dev/null | grep -qE "^(idle|mix|alloc)" && break
  sleep 1
done
sinfo -h -o "%t" -p "$PARTITION" | grep -qE "^(idle|mix|alloc)" \
  || die "the node did not come up: $(sinfo 2>&1); see $SLURM_DIR/slurmctld.log, slurmd.log"
sinfo

# The tracking server every job writes to, as on a cluster.
# In a session of its own, so that stopping its process group stops the server's workers too.
# -o: set-up is done (checked above, or by make slurm-test); its stamp, spelt as the Makefile
# spells it, is not to be remade here.
setsid make --no-print-directory -o "$VENV/.installed" server VENV="$VENV" HOST=127.0.0.1 \
  PORT="$PORT" SERVER_DIR="$SLURM_DIR/results" >"$SLURM_DIR/server.log" 2>&1 &
echo "-$!" >"$SLURM_DIR/server.pid"
STARTED+=("$SLURM_DIR/server.pid")
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null \
  || die "the tracking server did not start; see $SLURM_DIR/server.log"

say "grid: $GRID"
# shellcheck disable=SC2086
if ! "$BIN/bench" -m hydra/launcher=submitit_slurm "hydra.launcher.partition=$PARTITION" \
  hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2 hydra.launcher.timeout_min=20 \
  $GRID "hydra.sweep.dir=$SLURM_DIR/sweep" "tracking.uri=http://127.0.0.1:$PORT" \
  2>&1 | tee "$SLURM_DIR/bench.log"; then
  die "the grid failed; see $SLURM_DIR/bench.log and $SLURM_DIR/sweep/.submitit/*/*.err"
fi

"$BIN/python" - "http://127.0.0.1:$PORT" "$SLURM_DIR/sweep" <<'EOF'
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

uri, sweep = sys.argv[1], Path(sys.argv[2])
client = MlflowClient(uri)
runs = client.search_runs([client.get_experiment_by_name("physbench").experiment_id])
parents = [r for r in runs if r.data.tags.get("physbench.parent") == "true"]
children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
ok = [c for c in children if c.data.tags.get("status") == "ok"]
# submitit's folder per array task: <array id>_<task>, holding the job's pickled result
slurm_ids = sorted(p.parent.name for p in (sweep / ".submitit").glob("*_*/*_result.pkl"))
print(f"slurm-test: SLURM array tasks with a result: {', '.join(slurm_ids)}")
print(f"slurm-test: {len(parents)} parent, {len(children)} children, {len(ok)} ok")
for c in sorted(children, key=lambda r: r.data.tags["seed"]):
    print(f"  {c.info.run_name}  {c.data.tags['status']}  rel_l2 "
          f"{c.data.metrics.get('rel_l2', float('nan')):.3g}  run {c.info.run_id}")
assert len(parents) == 1 and len(children) == 4 and len(ok) == 4, "expected 4 ok children"
assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
assert len(slurm_ids) == 4, f"expected 4 SLURM jobs, found {slurm_ids}"
EOF
# The scheduler's own record: sacct lists the four array tasks as completed.
ARRAY=$(find "$SLURM_DIR/sweep/.submitit" -mindepth 1 -maxdepth 1 -name "*_*" -printf "%f\n" \
  | head -1 | cut -d_ -f1)
for _ in $(seq 30); do
  STATES=$(sacct -n -X -P -j "$ARRAY" -o JobID,State)
  [ "$(grep -c "|COMPLETED$" <<<"$STATES")" -eq 4 ] && break
  sleep 1
done
echo "$STATES" | sed 's/^/  sacct: /'
[ "$(grep -c "|COMPLETED$" <<<"$STATES")" -eq 4 ] || die "sacct does not list 4 completed jobs"

# Preemption: a 60-s run is sent USR2 once it has saved a checkpoint, as SLURM signals a job it
# preempts; submitit's handler calls the launcher's `checkpoint`, which requeues the same job,
# and the requeued job (SLURM_RESTART_COUNT 1) continues that checkpoint in its directory.
say "preemption: a 60-s run, signalled USR2 after its first checkpoint"
RQ=$SLURM_DIR/requeue
"$BIN/bench" -m hydra/launcher=submitit_slurm "hydra.launcher.partition=$PARTITION" \
  hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=2 hydra.launcher.timeout_min=20 \
  +method=pinn +problem=burgers seed=0 budget.seconds=60 checkpoint.every=5 \
  method.compile=false threads=1 eval.figures=false "hydra.sweep.dir=$RQ" \
  "tracking.uri=http://127.0.0.1:$PORT" >"$SLURM_DIR/requeue.log" 2>&1 &
BENCH=$!
for _ in $(seq 300); do [ -f "$RQ/0/checkpoint.json" ] && break; sleep 1; done
[ -f "$RQ/0/checkpoint.json" ] || die "no checkpoint after 300 s; see $SLURM_DIR/requeue.log"
JOB=$(squeue -h -o %i | head -1)
say "job $JOB has a checkpoint ($(cat "$RQ/0/checkpoint.json")); scancel --signal=USR2 $JOB"
scancel --signal=USR2 "$JOB"
wait "$BENCH" || die "the preempted run failed; see $SLURM_DIR/requeue.log and $RQ/.submitit"
"$BIN/python" - "$RQ/0/metrics.json" <<'EOF'
import json
import sys

rec = json.load(open(sys.argv[1]))
m = rec["metrics"]
print(f"slurm-test: requeued run: {rec['status']}, resumed from {rec.get('resumed_from')}, "
      f"{m.get('steps')} steps, {m.get('train_seconds', float('nan')):.1f} s of training")
assert rec["status"] == "ok" and rec.get("resumed_from"), "the requeued job did not resume"
assert m["train_seconds"] <= 60 + 5, "the budget was not carried over"
EOF
say "scontrol: job $JOB $(scontrol show job "$JOB" 2>/dev/null | grep -o "Restarts=[0-9]*")"
say "passed"
