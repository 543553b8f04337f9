#!/usr/bin/env bash
# The demo: run the retraining pipeline (prepare -> train -> evaluate -> promote) end to end through Airflow,
# each step a sibling container on the local Docker engine. `make demo` sets up venv, engine and images first.
#
# It runs the pipeline inside its asset chain, data -> pipeline -> model -> deploy (dags/dood_example_assets.py),
# each DAG with `airflow dags test` for the demo's date, no scheduler: dood_<pipeline>_ingest lands the date's
# partition and emits the data asset's event, the pipeline's prepare reads that partition, promote emits the model
# asset's event when it crowns a model, and dood_<pipeline>_deploy prints what it would deploy (the newest model
# event: the current champion). The events are recorded in Airflow's metadata DB as under a scheduler (`dags test`
# runs the execution API in process); the consumers are unpaused in the demo's DB so that Airflow also queues the
# runs a scheduler would start (asset_dag_run_queue); none starts. The chain section prints each link from the DB
# and fails the demo when one is missing (scripts/demo.py chain). A pipeline without `inputs` and `model_asset`,
# or not on the example image, runs alone.
#
# It also shows two things a retraining platform owes its users:
# - a training that resumes: the first try of train is killed (SIGKILL) on purpose after epoch $DEMO_KILL_EPOCH
#   (default 3; 0: no kill); Airflow retries it and the retry resumes from the checkpoint ("resumed from epoch k");
# - MLflow without a server of yours: the demo starts `mlflow server` from the venv (its store a SQLite file and
#   an artifact directory under $DEMO_DIR/mlflow, kept between demos) on the Docker bridge's gateway, where the
#   steps' containers reach it, and stops it at the end; it checks that the store holds one parent run per DAG
#   run with the step runs nested, and prints the command that opens MLflow's UI on it.
# The dood config in force ($DOOD_CONFIG, else config/dood.yaml) is read, never changed: the demo runs on a copy
# with its changes ($DEMO_DIR/dood.yaml: scripts/demo.py config).
set -euo pipefail

NAME=demo
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die, section
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/var/airflow}"
BASE_CONFIG="${DOOD_CONFIG:-$ROOT/config/dood.yaml}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
PIPELINE="${PIPELINE:-breast_cancer}"
DAG_ID="dood_$PIPELINE"
DATE="${DEMO_DATE:-$(date -u +%Y-%m-%d)}"
CONF="${DEMO_CONF:-{\}}"
KILL_EPOCH="${DEMO_KILL_EPOCH:-3}"
AIRFLOW="$ROOT/.venv/bin/airflow"
PY="$ROOT/.venv/bin/python"
HELPER="$ROOT/scripts/demo.py"
DEMO_DIR="${DEMO_DIR:-$ROOT/var/demo}"
MLFLOW_DIR="$DEMO_DIR/mlflow"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
LOG="$DEMO_DIR/$DAG_ID-$STAMP.log"
KILLED="$DEMO_DIR/killed-$STAMP.json"
INGEST_LOG="$DEMO_DIR/${DAG_ID}_ingest-$STAMP.log"
DEPLOY_LOG="$DEMO_DIR/${DAG_ID}_deploy-$STAMP.log"
export DOOD_CONFIG="$DEMO_DIR/dood.yaml"

mkdir -p "$AIRFLOW_HOME" "$DEMO_DIR"
rm -f "$MLFLOW_DIR/server.pid"

stop_mlflow() {  # the server's process group (it runs in its own session), SIGTERM then SIGKILL after 10 s
  local pid
  pid=$(cat "$MLFLOW_DIR/server.pid" 2>/dev/null) || return 0
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
trap 'stop_mlflow; for pid in "${killer:-}" "${deployer:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; done; true' EXIT

section "Airflow metadata DB (SQLite in $AIRFLOW_HOME) and MLflow's local store ($MLFLOW_DIR)"
chain_and_url="$("$PY" "$HELPER" config "$BASE_CONFIG" "$DOOD_CONFIG" --pipeline "$PIPELINE")" || exit 1
read -r CHAIN TRACKING_URI <<<"$chain_and_url"
# MLflow starts while the DB is migrated and the data lands: the pipeline is the first to need it
"$PY" "$HELPER" mlflow-start "$MLFLOW_DIR" --url "$TRACKING_URI" &
starter=$!
"$AIRFLOW" db migrate >"$DEMO_DIR/db-migrate.log" 2>&1 || { tail -n 20 "$DEMO_DIR/db-migrate.log"; exit 1; }
echo "ready: Airflow's DB; MLflow starting at $TRACKING_URI (the steps reach it on the Docker bridge); dood config $DOOD_CONFIG"

# shown LOG PATTERN: the lines of an `airflow dags test` log that matter here, without timestamp and logger
shown() { grep -E "$2" "$1" | sed -E 's/^[0-9T:.Z-]+ \[[a-z ]+\] //; s/ +\[(airflow|dood|task)[^]]*\].*$//' || true; }
# finished NAME LOG RC [EXPECTED]: a failed run (RC) ends the demo with its log's tail, unless its log says EXPECTED
# (then it returns 1)
finished() {
  [[ $3 -eq 0 ]] && return 0
  [[ -n "${4:-}" ]] && grep -q -- "$4" "$2" && return 1
  tail -n 30 "$2"
  die "$1 failed (exit $3); its log: $2"
}

if [[ "$CHAIN" == chain ]]; then
  section "The data: ${DAG_ID}_ingest lands $DATE's partition and emits the data asset's event (log: $INGEST_LOG)"
  "$PY" "$HELPER" unpause "$DAG_ID" "${DAG_ID}_deploy" >"$DEMO_DIR/unpause.log" 2>&1 ||
    { tail -n 20 "$DEMO_DIR/unpause.log"; die "could not unpause $DAG_ID and ${DAG_ID}_deploy in $AIRFLOW_HOME"; }
  echo "$DAG_ID and ${DAG_ID}_deploy are unpaused in this DB: Airflow queues the runs their assets' events call for."
  rc=0
  "$AIRFLOW" dags test "${DAG_ID}_ingest" "$DATE" >"$INGEST_LOG" 2>&1 || rc=$?
  shown "$INGEST_LOG" "\[ingest\]|Data asset event|DagRun Finished"
  finished "${DAG_ID}_ingest" "$INGEST_LOG" $rc
fi

wait "$starter" || die "the MLflow server did not start (see above and $MLFLOW_DIR/server.log)"

section "Running $DAG_ID for $DATE with conf $CONF (full log: $LOG)"
echo "Each step is a container launched through the Docker socket; its output follows."
if [[ "$KILL_EPOCH" -gt 0 ]]; then
  echo "train's first try will be killed after epoch $KILL_EPOCH, on purpose."
  "$PY" "$HELPER" kill "$DAG_ID" --task train --epoch "$KILL_EPOCH" --record "$KILLED" &
  killer=$!
fi
set +e
# (awk: without the container's last lines that a failed try's error repeats; they were shown as they came)
"$AIRFLOW" dags test "$DAG_ID" "$DATE" -c "$CONF" 2>&1 | tee "$LOG" |
  awk '/^Last [0-9]+ log lines:/ { skip = 1; next } /^[0-9][0-9][0-9][0-9]-/ { skip = 0 } !skip { print; fflush() }' |
  grep --line-buffered -E "Creating container|(^|\] )\[(prepare|train|evaluate|promote)\]|Run partition|Checkpoint|exited with code|UP_FOR_RETRY|DagRun Finished" |
  sed -u -E 's/^[0-9T:.Z-]+ \[[a-z ]+\] //; s/ +\[(airflow|dood)[^]]*\].*$//'
status=${PIPESTATUS[0]}
set -e
if [[ -n "${killer:-}" ]]; then
  kill "$killer" 2>/dev/null || true  # still waiting: train never reached the epoch
  wait "$killer" 2>/dev/null || true
  killer=
fi

if [[ "$CHAIN" == chain && $status -eq 0 ]]; then  # shown after the checks, which run meanwhile
  "$AIRFLOW" dags test "${DAG_ID}_deploy" "$DATE" >"$DEPLOY_LOG" 2>&1 &
  deployer=$!
fi

section "Where things are"
"$PY" - "$DAG_ID" "$PIPELINE" "$LOG" <<'PYEOF'
import json, sys
from pathlib import Path
from dood.config.model import load_config
dag_id, name, log = sys.argv[1:]
pipeline = load_config().pipelines[name]
runs = sorted((Path(pipeline.artifact_root) / name).glob("*"), key=lambda p: p.stat().st_mtime)
if not runs:
    sys.exit("no run partition was written; see the log above")
work = runs[-1]
print(f"run partition : {work}")
print(f"model         : {work / 'model' / 'model.joblib'}")
eval_file = work / "metrics" / "eval.json"
if eval_file.exists():
    print(f"metrics       : {eval_file}  {json.loads(eval_file.read_text())}")
champion = Path(pipeline.model_root) / name / "champion"
if (champion / "source.json").exists():
    source = json.loads((champion / "source.json").read_text())
    metrics = json.loads((champion / "metrics.json").read_text())
    print(f"champion      : {champion}  (run {source.get('run_id')}, accuracy {metrics.get('accuracy')})")
print(f"airflow log   : {log}")
PYEOF
echo "mlflow store  : $MLFLOW_DIR (runs in mlflow.db, artifacts in artifacts/)"
if [[ $status -ne 0 ]]; then
  section "The pipeline run failed (exit $status); the full log above says why."
  exit "$status"
fi

section "Checks: the resume and MLflow's run hierarchy"
"$PY" "$HELPER" check "$LOG" --tracking-uri "$TRACKING_URI" --experiment "$PIPELINE" --record "$KILLED" |
  tee "$DEMO_DIR/check-$STAMP.out"
[[ ${PIPESTATUS[0]} -eq 0 ]] || exit 1
EXPERIMENT_ID="$(sed -n 's/^experiment_id=//p' "$DEMO_DIR/check-$STAMP.out")"
rm -f "$DEMO_DIR/check-$STAMP.out" "$KILLED"
stop_mlflow

if [[ -n "${deployer:-}" ]]; then
  section "The deploy: ${DAG_ID}_deploy, a run no model event triggered, deploys the newest (log: $DEPLOY_LOG)"
  rc=0
  wait "$deployer" || rc=$?
  deployer=
  shown "$DEPLOY_LOG" "would deploy|DagRun Finished"
  # no model event at all (the champion was crowned before the pipeline had a model_asset): deploy says so, and fails
  finished "${DAG_ID}_deploy" "$DEPLOY_LOG" $rc "has no event: nothing to deploy" || echo "deploy: nothing to deploy"
fi

if [[ "$CHAIN" == chain ]]; then
  section "The asset chain: data -> $DAG_ID -> model -> deploy, from Airflow's metadata DB"
  "$PY" "$HELPER" chain "$PIPELINE" --date "$DATE" --ingest-log "$INGEST_LOG" --pipeline-log "$LOG" \
    --deploy-log "$DEPLOY_LOG" || exit 1
fi

section "Done. MLflow's UI on the demo's store (then open http://127.0.0.1:5000/#/experiments/$EXPERIMENT_ID):"
echo "  $ROOT/.venv/bin/mlflow ui --backend-store-uri sqlite:///$MLFLOW_DIR/mlflow.db --artifacts-destination $MLFLOW_DIR/artifacts --port 5000"
echo "Run it again (make demo) to see promote skipped when the new model is not better; DEMO_CONF='{\"force_promote\": true}' forces it;"
echo "DEMO_KILL_EPOCH=0 runs train without the kill."
