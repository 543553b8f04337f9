"""(b) Forwarding a big log (`seq 1 N`): elapsed time and peak RSS, each run in its own process.

Variants (each a fresh `python` process, so ru_maxrss is that variant's own peak):

* ``raw``        - docker SDK: ``api.logs(stream=True, follow=True)`` after start, counting lines and writing
                   the chunks to a file. The baseline the goals are stated against.
* ``dood``       - ``DoodContainerOperator.execute``; its ``self.log`` goes through Airflow's task-log setup
                   (structlog, JSON lines, unbuffered stream) into a file, as in a real task. The project's
                   defaults: lines that arrived in one chunk share a record, up to 100 per record.
* ``dood_lpr1``  - the same with ``defaults.log_lines_per_record: 1`` in its DOOD_CONFIG: one record per line
                   (what batching saves).
* ``docker``     - ``DockerOperator.execute``, logging the same way.
* ``raw_attach`` - (informational) docker SDK ``api.attach(stream=True)`` opened before start: the live
                   stream DockerOperator reads; shows what the daemon can deliver without one frame per line.

After each run the worker checks the log really arrived: the number of container lines in the task log
(or counted by the raw loop) must equal N, and the last one must be N. A run that forwarded fewer lines is
reported as incomplete, left out of the medians (its time would flatter it) and tried again, up to
--max-attempts times.

    .venv/bin/python benchmarks/bench_logs.py --lines 300000,3000000 --repeat 3 --out benchmarks/results/logs.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common as common  # noqa: E402

DEFAULT_VARIANTS = ("raw", "dood", "dood_lpr1", "docker", "raw_attach")
OPERATORS = ("dood", "dood_lpr1", "docker")
# Container output as Airflow's JSON task log records it: {"timestamp":..,"event":"123",...}; a record
# holding several lines (a forwarder that batches) has them JSON-escaped: "event":"1\n2\n3".
_OUTPUT_RECORD = re.compile(rb'"event":"((?:\d+\\n)*\d+)"')


# --- worker: one variant, one run, in this process ---


def count_forwarded(log_path: Path) -> tuple[int, int, int]:
    """(container lines, records holding them, last line's number) in a JSON-lines task log, read in chunks."""
    count = records = last = 0
    tail = b""
    with open(log_path, "rb") as handle:
        while block := handle.read(1 << 20):
            block = tail + block
            cut = block.rfind(b"\n") + 1
            tail = block[cut:]
            count, records, last = _tally(_OUTPUT_RECORD.findall(block, 0, cut), count, records, last)
    if tail:
        count, records, last = _tally(_OUTPUT_RECORD.findall(tail), count, records, last)
    return count, records, last


def _tally(events: list[bytes], count: int, records: int, last: int) -> tuple[int, int, int]:
    for event in events:
        count += event.count(b"\\n") + 1
    if events:
        last = int(events[-1].rsplit(b"\\n", 1)[-1])
    return count, records + len(events), last


def run_raw_attach(command: list[str], sink) -> int:
    import docker

    api = docker.APIClient(base_url=common.DOCKER_URL, version="auto")
    try:
        cid = api.create_container(image=common.IMAGE, command=command)["Id"]
        lines = 0
        try:
            stream = api.attach(cid, stdout=True, stderr=True, stream=True)
            api.start(cid)
            for chunk in stream:
                lines += chunk.count(b"\n")
                sink.write(chunk)
            status = api.wait(cid)["StatusCode"]
            if status != 0:
                raise RuntimeError(f"container exited with {status}")
        finally:
            api.remove_container(cid, force=True, v=True)
        return lines
    finally:
        api.close()


def worker(variant: str, lines: int, out: Path) -> int:
    work = common.workdir(f"dood-bench-logs-{variant}-")
    log_path = work / "task.log"
    command = ["seq", "1", str(lines)]
    dood_file = None
    if variant in OPERATORS:
        common.write_dood_config(work, lines_per_record=1 if variant == "dood_lpr1" else None)
        common.configure_task_logging(log_path)
        if variant != "docker":
            import dood
            from dood.operators.container import DoodContainerOperator  # noqa: F401

            dood_file = dood.__file__
        else:
            from airflow.providers.docker.operators.docker import DockerOperator  # noqa: F401
    else:
        import docker  # noqa: F401
    rss_before = common.current_rss_mib()
    peak_before = common.peak_rss_mib()

    sink = open(log_path, "wb") if variant in ("raw", "raw_attach") else None
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    try:
        if variant == "raw":
            counted = common.run_raw(command, sink)
        elif variant == "raw_attach":
            counted = run_raw_attach(command, sink)
        else:
            common.run_variant("docker" if variant == "docker" else "dood", command, "logs")
            counted = None
    except Exception as exc:  # noqa: BLE001 - recorded (Airflow's logging may have taken over stderr)
        error = f"{type(exc).__name__}: {exc}"[:1000]
        forwarded = count_forwarded(log_path)[0] if variant in OPERATORS else None
        result = {"variant": variant, "lines": lines, "error": error, "forwarded": forwarded, "complete": False}
        out.write_text(json.dumps(result), encoding="utf-8")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 1024
    if sink is not None:
        sink.close()

    if counted is None:
        forwarded, records, last = count_forwarded(log_path)
    else:
        forwarded, records, last = counted, None, None
    result = {
        "variant": variant,
        "lines": lines,
        "forwarded": forwarded,
        "last_line": last,
        "records": records,
        "complete": forwarded == lines and (last is None or last == lines),
        "elapsed_s": elapsed,
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "cpu_run_s": (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime),
        "rss_before_mib": rss_before,
        "peak_rss_before_run_mib": peak_before,
        "peak_rss_mib": peak,
        "log_bytes": log_path.stat().st_size,
        "dood_module": dood_file,
        "loadavg_after": os.getloadavg(),
    }
    out.write_text(json.dumps(result), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return 0


# --- driver: spawn one worker per (repetition, size, variant), interleaved ---


def spawn(variant: str, lines: int, tmp: Path) -> dict:
    out = tmp / f"{variant}-{lines}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, str(lines), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        error = (proc.stderr or proc.stdout)[-1000:] or f"exit status {proc.returncode}, no output"
        return {"variant": variant, "lines": lines, "error": error, "complete": False}
    return json.loads(out.read_text(encoding="utf-8"))


def summarize(runs: list[dict], variants: list[str], sizes: list[int]) -> list[dict]:
    rows = []
    for size in sizes:
        base = None
        for variant in variants:
            mine = [r for r in runs if r["variant"] == variant and r["lines"] == size]
            good = [r for r in mine if r.get("complete")]
            row = {"variant": variant, "lines": size, "runs": len(mine), "complete_runs": len(good)}
            if good:
                row.update(
                    median_elapsed_s=statistics.median(r["elapsed_s"] for r in good),
                    median_peak_rss_mib=statistics.median(r["peak_rss_mib"] for r in good),
                    median_rss_before_mib=statistics.median(r["rss_before_mib"] for r in good),
                    median_cpu_s=statistics.median(r["cpu_user_s"] + r["cpu_sys_s"] for r in good),
                    median_cpu_run_s=statistics.median(r["cpu_run_s"] for r in good),
                    elapsed_s=[round(r["elapsed_s"], 3) for r in good],
                    median_records=(
                        statistics.median(r["records"] for r in good)
                        if all(r.get("records") is not None for r in good)
                        else None
                    ),
                )
            row["incomplete"] = [
                {"forwarded": r.get("forwarded"), "elapsed_s": r.get("elapsed_s"), "error": r.get("error")}
                for r in mine
                if not r.get("complete")
            ]
            if variant == "raw" and good:
                base = row["median_elapsed_s"]
            row["ratio_to_raw"] = row["median_elapsed_s"] / base if base and good else None
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", default="300000,3000000", help="comma-separated log sizes")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every (size, variant)")
    parser.add_argument("--repeat-large", type=int, help="repetitions for sizes >= 1,000,000 (default: --repeat)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="attempts per (repetition, size, variant) until one forwards every line (default 3)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "LINES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, lines, out = args.worker
        return worker(variant, int(lines), Path(out))

    variants = args.variants.split(",")
    sizes = [int(s) for s in args.lines.split(",")]
    tmp = common.workdir("dood-bench-logs-")
    runs: list[dict] = []
    code_before = common.code_state()
    load_before = os.getloadavg()
    started_utc = time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())
    started = time.perf_counter()
    repeat_large = args.repeat_large or args.repeat
    for rep in range(max(args.repeat, repeat_large)):
        for size in sizes:
            if rep >= (repeat_large if size >= 1_000_000 else args.repeat):
                continue
            shift = rep % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                for attempt in range(args.max_attempts):
                    result = spawn(variant, size, tmp)
                    result["repetition"] = rep
                    result["attempt"] = attempt
                    runs.append(result)
                    if "error" in result:  # e.g. the container removed from outside: tried again like a short log
                        print(f"rep {rep} {variant:10s} {size:>9,d} lines: ERROR {result['error'][:200]}", flush=True)
                        continue
                    flag = "" if result["complete"] else f"  INCOMPLETE: {result['forwarded']:,} lines arrived"
                    print(
                        f"rep {rep} {variant:10s} {size:>9,d} lines: {result['elapsed_s']:7.2f} s  "
                        f"peak RSS {result['peak_rss_mib']:6.1f} MiB (before run {result['rss_before_mib']:6.1f})"
                        f"{flag}",
                        flush=True,
                    )
                    if result["complete"]:
                        break
    shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(runs, variants, sizes)
    for row in rows:
        if "median_elapsed_s" in row:
            ratio = f"{row['ratio_to_raw']:.2f}x" if row["ratio_to_raw"] else "-"
            print(
                f"{row['variant']:10s} {row['lines']:>9,d}: median {row['median_elapsed_s']:7.2f} s ({ratio})  "
                f"peak RSS {row['median_peak_rss_mib']:6.1f} MiB  complete {row['complete_runs']}/{row['runs']}"
            )
        else:
            print(f"{row['variant']:10s} {row['lines']:>9,d}: no complete run ({row['runs']} runs)")
    result = {
        "benchmark": "logs",
        "sizes": sizes,
        "variants": variants,
        "repeat": args.repeat,
        "repeat_large": repeat_large,
        "code": common.code_span(code_before),
        "started_utc": started_utc,
        "finished_utc": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "wall_s": time.perf_counter() - started,
        "rows": rows,
        "runs": runs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
