#!/usr/bin/env bash
# Run the operator benchmarks on the code as it is and write their section of docs/benchmarks.md
# (about 10 minutes on 2 cores; see benchmarks/README.md).
#
#   bash benchmarks/run.sh
#
# Knobs (environment):
#   BENCH_OVERHEAD_RUNS  measured runs per variant in (a)                         (default 30)
#   BENCH_LINES          log sizes of (b), comma-separated                         (default 300000,3000000)
#   BENCH_REPEAT         repetitions of (b) for sizes < 1,000,000 lines            (default 3)
#   BENCH_REPEAT_LARGE   repetitions of (b) for sizes >= 1,000,000 lines           (default 2: ~3 min each)
#   BENCH_LOG_VARIANTS   variants of (b), comma-separated       (default raw,dood,dood_lpr1,docker,raw_attach)
#   BENCH_SKIP_REPORT=1  do not rewrite docs/benchmarks.md
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
RESULTS="$ROOT/benchmarks/results"
IMAGE="${DOOD_BENCH_IMAGE:-dood-test-busybox:latest}"
RUNS="${BENCH_OVERHEAD_RUNS:-30}"
LINES="${BENCH_LINES:-300000,3000000}"
REPEAT="${BENCH_REPEAT:-3}"
REPEAT_LARGE="${BENCH_REPEAT_LARGE:-2}"
VARIANTS="${BENCH_LOG_VARIANTS:-raw,dood,dood_lpr1,docker,raw_attach}"

say() { printf '\n== %s\n' "$*"; }

docker info --format '{{.ServerVersion}}' >/dev/null 2>&1 || bash "$ROOT/scripts/ensure-docker.sh"
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "run.sh: image $IMAGE is missing; build it with: bash scripts/build-images.sh test" >&2
  exit 1
fi
mkdir -p "$RESULTS"
cd "$ROOT"

say "(a) per-container overhead: $RUNS runs per variant"
"$PY" benchmarks/bench_overhead.py --runs "$RUNS" --out "$RESULTS/overhead.json"

say "(b) log forwarding: $LINES lines, $REPEAT / $REPEAT_LARGE repetitions, variants $VARIANTS"
"$PY" benchmarks/bench_logs.py --lines "$LINES" --repeat "$REPEAT" --repeat-large "$REPEAT_LARGE" \
  --variants "$VARIANTS" --out "$RESULTS/logs.json"

if [[ "${BENCH_SKIP_REPORT:-0}" != 1 ]]; then
  say "report"
  cmd="bash benchmarks/run.sh"
  for var in BENCH_OVERHEAD_RUNS BENCH_LINES BENCH_REPEAT BENCH_REPEAT_LARGE BENCH_LOG_VARIANTS; do
    if [[ -n "${!var:-}" ]]; then cmd="$var='${!var}' $cmd"; fi
  done
  "$PY" benchmarks/report.py --results "$RESULTS" --out "$ROOT/docs/benchmarks.md" --command "$cmd" \
    --notes "$ROOT/benchmarks/analysis.md"
fi
