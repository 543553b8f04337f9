"""Where DoodContainerOperator's time goes when it forwards a big log: cProfile, top functions.

    .venv/bin/python benchmarks/profile_logs.py --lines 100000 [--lines-per-record 1]

Runs one `seq 1 N` container through execute() with Airflow's task logging into a file (as bench_logs.py),
under cProfile, and prints the top functions by own time and by cumulative time. Profiling slows Python
code down (roughly 2x here), so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from bench_logs import count_forwarded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--attempts", type=int, default=3, help="retries while the log arrives incomplete")
    parser.add_argument("--variant", default="dood", choices=("dood", "docker", "raw"))
    parser.add_argument(
        "--lines-per-record", type=int, help="defaults.log_lines_per_record in the DOOD_CONFIG (default: 100)"
    )
    args = parser.parse_args()
    work = common.workdir("dood-bench-profile-")
    common.write_dood_config(work, lines_per_record=args.lines_per_record)
    log_path = work / "task.log"
    common.configure_task_logging(log_path)
    from airflow.providers.docker.operators.docker import DockerOperator  # noqa: F401

    import dood
    from dood.operators.container import DoodContainerOperator  # noqa: F401

    for attempt in range(1, args.attempts + 1):
        log_path.write_bytes(b"")
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        if args.variant == "raw":
            with open(log_path, "wb") as sink:
                common.run_raw(["seq", "1", str(args.lines)], sink)
        else:
            common.run_variant(args.variant, ["seq", "1", str(args.lines)], f"profile{attempt}")
        profile.disable()
        elapsed = time.perf_counter() - start
        forwarded = count_forwarded(log_path)[0] if args.variant != "raw" else args.lines
        print(
            f"# {args.variant} ({dood.__file__}), attempt {attempt}: {args.lines:,} lines, {elapsed:.2f} s under "
            f"cProfile; {forwarded:,} lines reached the task log"
            + ("" if forwarded == args.lines else "  <-- INCOMPLETE, execute() still succeeded; trying again")
        )
        if forwarded == args.lines:
            break
    else:
        print("# no complete run: the profile below is of an incomplete one")
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(key).print_stats(args.top)
        print(f"\n## by {key}\n")
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
