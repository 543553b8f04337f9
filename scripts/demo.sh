#!/usr/bin/env bash
# The demo: run the retraining pipeline (prepare -> train -> evaluate -> promote) end to end through Airflow,
# each step a sibling container on the local Docker engine. `make demo` sets up venv, engine and images first.
set -euo pipefail

NAME=demo
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # ROOT, say, die, section
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/var/airflow}"
export DOOD_CONFIG="${DOOD_CONFIG:-$ROOT/config/dood.yaml}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
PIPELINE="${PIPELINE:-breast_cancer}"
DAG_ID="dood_$PIPELINE"
DATE="${DEMO_DATE:-$(date -u +%Y-%m-%d)}"
CONF="${DEMO_CONF:-{\}}"
AIRFLOW="$ROOT/.venv/bin/airflow"
PY="$ROOT/.venv/bin/python"
LOG_DIR="$ROOT/var/demo"
LOG="$LOG_DIR/$DAG_ID-$(date -u +%Y%m%dT%H%M%SZ).log"

mkdir -p "$AIRFLOW_HOME" "$LOG_DIR"

section "Airflow metadata DB (SQLite in $AIRFLOW_HOME)"
"$AIRFLOW" db migrate >"$LOG_DIR/db-migrate.log" 2>&1 || { tail -n 20 "$LOG_DIR/db-migrate.log"; exit 1; }
echo "ready"

section "Running $DAG_ID for $DATE with conf $CONF (full log: $LOG)"
echo "Each step is a container launched through the Docker socket; its output follows:"
set +e
"$AIRFLOW" dags test "$DAG_ID" "$DATE" -c "$CONF" 2>&1 | tee "$LOG" |
  grep --line-buffered -E "Creating container|(^|\] )\[(prepare|train|evaluate|promote)\]|Run partition|exited with code|DagRun Finished" |
  sed -E 's/^[0-9T:.Z-]+ \[[a-z ]+\] //; s/ +\[(airflow|dood)[^]]*\].*$//'
status=${PIPESTATUS[0]}
set -e

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
if [[ $status -ne 0 ]]; then
  section "The pipeline run failed (exit $status); the full log above says why."
  exit "$status"
fi
section "Done. Run it again (make demo) to see promote skipped when the new model is not better; DEMO_CONF='{\"force_promote\": true}' forces it."
