"""(a) Per-container overhead on a trivial container: raw docker SDK vs DoodContainerOperator vs DockerOperator.

One process, the three variants interleaved (the order rotates every round, so drift and caching hit all
three alike), each round running every variant once on ``echo hi``. Times cover the whole job: client,
create, start, logs, wait, remove (plus, for the operators, everything their ``execute`` does).

    .venv/bin/python benchmarks/bench_overhead.py --runs 15 --out benchmarks/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

COMMAND = ["echo", "hi"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="measured runs per variant (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    parser.add_argument("--variants", default=",".join(common.VARIANTS))
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    variants = args.variants.split(",")

    work = common.workdir("dood-bench-overhead-")
    common.write_dood_config(work)
    common.configure_task_logging(work / "task.log")
    # Import everything up front: a task process has its operator imported before execute() runs.
    import docker  # noqa: F401
    from airflow.providers.docker.operators.docker import DockerOperator  # noqa: F401

    import dood
    from dood.operators.container import DoodContainerOperator  # noqa: F401

    times: dict[str, list[float]] = {v: [] for v in variants}
    code_before = common.code_state()
    load_before = os.getloadavg()
    started_utc = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    for round_no in range(args.warmup + args.runs):
        shift = round_no % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            start = time.perf_counter()
            common.run_variant(variant, COMMAND, f"r{round_no}")
            elapsed = time.perf_counter() - start
            if round_no >= args.warmup:
                times[variant].append(elapsed)
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times["raw"]) if "raw" in times else None
    rows = []
    for variant in variants:
        values = times[variant]
        med = statistics.median(values)
        rows.append(
            {
                "variant": variant,
                "runs": len(values),
                "median_s": med,
                "min_s": min(values),
                "max_s": max(values),
                "q1_s": statistics.quantiles(values, n=4)[0] if len(values) > 1 else med,
                "q3_s": statistics.quantiles(values, n=4)[2] if len(values) > 1 else med,
                "ratio_to_raw": med / base if base else None,
                "samples_s": values,
            }
        )
        ratio = f"{med / base:.3f}x" if base else "-"
        print(
            f"{variant:8s} median {med * 1000:7.1f} ms  min {min(values) * 1000:7.1f}  "
            f"max {max(values) * 1000:7.1f}  ratio {ratio}",
            flush=True,
        )
    result = {
        "benchmark": "overhead",
        "command": COMMAND,
        "image": common.IMAGE,
        "warmup_rounds": args.warmup,
        "dood_module": dood.__file__,
        "code": common.code_span(code_before),
        "started_utc": started_utc,
        "finished_utc": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
