"""How long Airflow takes to parse the generated pipeline DAGs, and proof that parsing touches no Docker.

Parses dags/ with Airflow's own DagBag (as the dag-processor does) N times in this process, after one warm-up
(imports are paid once per dag-processor process), with the docker SDK's and aiodocker's network entry points
replaced by tripwires: any Docker call at parse time fails the benchmark.

    .venv/bin/python benchmarks/bench_dag_parse.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tripwire(*_args, **_kwargs):
    raise AssertionError("a Docker call was made at DAG-parse time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dood-bench-parse-"))
    os.environ.setdefault("DOOD_CONFIG", str(REPO / "config" / "dood.yaml"))

    import docker.api.client
    from airflow.dag_processing.dagbag import DagBag

    docker.api.client.APIClient.__init__ = tripwire  # type: ignore[method-assign]

    def parse() -> tuple[float, DagBag]:
        started = time.perf_counter()
        bag = DagBag(dag_folder=str(REPO / "dags"))
        return time.perf_counter() - started, bag

    _, bag = parse()  # warm-up: module imports
    assert not bag.import_errors, bag.import_errors
    times = [parse()[0] for _ in range(args.runs)]
    print(f"dags/: {len(bag.dag_ids)} DAGs ({', '.join(sorted(bag.dag_ids))}) from {len(bag.dagbag_stats)} files")
    print(
        f"parse of dags/ (DagBag, warm), {args.runs} runs: median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms; no Docker call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
