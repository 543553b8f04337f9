#!/usr/bin/env bash
# Run the benchmarks in benchmarks/ on the code as it is; results in benchmarks/results/, and the operator
# benchmarks' section of docs/benchmarks.md rewritten (see benchmarks/README.md).
#
#   bash benchmarks/run.sh [--only NAMES] [--skip NAMES] [--with-gpus] [--quick]      (make bench: no flags)
#
# NAMES, comma-separated, in the order they run, with what each needs:
#   overhead   (a) per-container overhead: raw SDK, DoodContainerOperator, DockerOperator   engine, test image
#   logs       (b) log forwarding, 300,000 and 3,000,000 lines (about 10 minutes)          engine, test image
#   dag_parse  parsing the generated DAGs (and proof it makes no Docker call)               nothing
#   proxy      dood-proxy vs the direct socket (starts its own proxy process)               engine, test image
#   trigger    200 DoodContainerTriggers in one event loop                                  engine, test image
#   ui         the DooD page with 200 containers                                            engine, test image
#   chain      20 sequential tasks through dag.test(): DoodContainerOperator vs DockerOperator, a fresh
#              process per run (issue 12; about 10 minutes)                                 engine, test image
#   gpus       GPU claims (only with --with-gpus: starts a second dockerd of its own with the fake NVIDIA
#              hook, tests/integration/second_engine.py; needs root and no other user of that engine)
# --quick runs each with tiny sizes, to check that it runs (no report is written; results are not numbers
# to quote).
#
# Knobs (environment) of (a), (b) and chain:
#   BENCH_OVERHEAD_RUNS  measured runs per variant in (a)                         (default 30)
#   BENCH_LINES          log sizes of (b), comma-separated                         (default 300000,3000000)
#   BENCH_REPEAT         repetitions of (b) for sizes < 1,000,000 lines            (default 3)
#   BENCH_REPEAT_LARGE   repetitions of (b) for sizes >= 1,000,000 lines           (default 2: ~3 min each)
#   BENCH_LOG_VARIANTS   variants of (b), comma-separated       (default raw,dood,dood_lpr1,docker,raw_attach)
#   BENCH_CHAIN_REPEAT   dag.test() runs per variant in chain                      (default 5)
#   BENCH_SKIP_REPORT=1  do not rewrite docs/benchmarks.md
set -euo pipefail

NAME=bench
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"  # ROOT, say, die, section, have_image
PY="${PYTHON:-$ROOT/.venv/bin/python}"
RESULTS="$ROOT/benchmarks/results"
IMAGE="${DOOD_BENCH_IMAGE:-dood-test-busybox:latest}"
RUNS="${BENCH_OVERHEAD_RUNS:-30}"
LINES="${BENCH_LINES:-300000,3000000}"
REPEAT="${BENCH_REPEAT:-3}"
REPEAT_LARGE="${BENCH_REPEAT_LARGE:-2}"
VARIANTS="${BENCH_LOG_VARIANTS:-raw,dood,dood_lpr1,docker,raw_attach}"
CHAIN_REPEAT="${BENCH_CHAIN_REPEAT:-5}"
ALL="overhead,logs,dag_parse,proxy,trigger,ui,chain,gpus"

only="overhead,logs,dag_parse,proxy,trigger,ui,chain" skip="" quick=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --skip) skip="$2"; shift 2 ;;
    --with-gpus) only="$only,gpus"; shift ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see: bash benchmarks/run.sh --help)" ;;
  esac
done
for name in ${only//,/ } ${skip//,/ }; do
  [[ ",$ALL," == *",$name,"* ]] || die "no benchmark named $name (names: $ALL)"
done
wanted() { [[ ",$only," == *",$1,"* && ",$skip," != *",$1,"* ]]; }

if wanted overhead || wanted logs || wanted proxy || wanted trigger || wanted ui || wanted chain; then
  docker info --format '{{.ServerVersion}}' >/dev/null 2>&1 || bash "$ROOT/scripts/ensure-docker.sh"
  have_image "$IMAGE" || die "image $IMAGE is missing; build it with: bash scripts/build-images.sh test"
fi
if wanted gpus && [[ $(id -u) -ne 0 ]]; then
  die "gpus starts a second dockerd: run as root, or leave out --with-gpus"
fi
if [[ $quick == 1 ]]; then
  RUNS=2 LINES=2000 REPEAT=1 REPEAT_LARGE=1 VARIANTS=raw,dood
fi
mkdir -p "$RESULTS"
cd "$ROOT"

if wanted overhead; then
  section "(a) per-container overhead: $RUNS runs per variant"
  "$PY" benchmarks/bench_overhead.py --runs "$RUNS" --out "$RESULTS/overhead.json"
fi

if wanted logs; then
  section "(b) log forwarding: $LINES lines, $REPEAT / $REPEAT_LARGE repetitions, variants $VARIANTS"
  "$PY" benchmarks/bench_logs.py --lines "$LINES" --repeat "$REPEAT" --repeat-large "$REPEAT_LARGE" \
    --variants "$VARIANTS" --out "$RESULTS/logs.json"
fi

if wanted dag_parse; then
  section "DAG parsing"
  "$PY" benchmarks/bench_dag_parse.py --runs "$([[ $quick == 1 ]] && echo 2 || echo 20)" | tee "$RESULTS/dag_parse.txt"
fi

if wanted proxy; then
  section "dood-proxy vs the direct socket"
  if [[ $quick == 1 ]]; then set -- --runs 2 --stream-runs 1 --lines 2000; else set --; fi
  "$PY" benchmarks/bench_proxy.py "$@" | tee "$RESULTS/proxy.txt"
fi

if wanted trigger; then
  section "triggers in one event loop"
  if [[ $quick == 1 ]]; then set -- --count 5 --min-sleep 1 --max-sleep 2; else set --; fi
  "$PY" benchmarks/bench_trigger.py "$@" --json "$RESULTS/trigger.json"
fi

if wanted ui; then
  section "the DooD page"
  if [[ $quick == 1 ]]; then set -- --containers 5 --requests 3; else set --; fi
  "$PY" benchmarks/bench_ui.py "$@" | tee "$RESULTS/ui.txt"
fi

if wanted chain; then
  section "a 20-task chain through dag.test(): $CHAIN_REPEAT runs per variant"
  if [[ $quick == 1 ]]; then set -- --repeat 1 --warmup 0 --tasks 3; else set -- --repeat "$CHAIN_REPEAT"; fi
  "$PY" benchmarks/bench_chain.py "$@" --out "$RESULTS/chain.json" | tee "$RESULTS/chain.txt"
fi

if wanted gpus; then
  section "GPU claims (a second dockerd of its own)"
  if [[ $quick == 1 ]]; then set -- --waiters 4 --gpus 2 --seconds 0.5 --samples 3; else set --; fi
  "$PY" benchmarks/bench_gpus.py "$@" | tee "$RESULTS/gpus.txt"
fi

if [[ "${BENCH_SKIP_REPORT:-0}" != 1 && $quick == 0 ]] && wanted overhead && wanted logs; then
  section "report"
  cmd="bash benchmarks/run.sh"
  for var in BENCH_OVERHEAD_RUNS BENCH_LINES BENCH_REPEAT BENCH_REPEAT_LARGE BENCH_LOG_VARIANTS; do
    if [[ -n "${!var:-}" ]]; then cmd="$var='${!var}' $cmd"; fi
  done
  "$PY" benchmarks/report.py --results "$RESULTS" --out "$ROOT/docs/benchmarks.md" --command "$cmd" \
    --notes "$ROOT/benchmarks/analysis.md"
fi
