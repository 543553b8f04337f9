"""Reproduce: `logs(follow=True)` ends early, without an error, when the container exits while the reader is behind.

    .venv/bin/python benchmarks/repro_follow_truncation.py [--lines 100000] [--delay-us 50] [--tries 4]

For each try, a container prints `seq 1 N` and a reader that spends `delay-us` per received frame (about what
forwarding one line into Airflow's task log costs) counts what arrives:

* ``follow``          - `api.logs(stream=True, follow=True)` after start (what DoodContainerOperator does);
* ``follow-outlives`` - the same, but the container sleeps afterwards until the reader has caught up;
* ``attach``          - `api.attach(stream=True)` opened before start (what DockerOperator does).

On this machine's Docker 20.10.24 the first one often stops after a fraction of the lines while the other two
always get all of them: the stream is cut when the container exits, not when the reader is slow.
"""

from __future__ import annotations

import argparse
import sys
import time

import docker

IMAGE = "dood-test-busybox:latest"


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def one(api, mode: str, lines: int, delay: float) -> tuple[int, float]:
    if mode == "follow-outlives":
        # sleep long enough for the slow reader: N frames x delay, plus margin
        command = ["sh", "-c", f"seq 1 {lines}; sleep {int(lines * delay * 1.5) + 3}"]
    else:
        command = ["seq", "1", str(lines)]
    cid = api.create_container(IMAGE, command)["Id"]
    start = time.perf_counter()
    try:
        if mode == "attach":
            stream = api.attach(cid, stdout=True, stderr=True, stream=True)
            api.start(cid)
        else:
            api.start(cid)
            stream = api.logs(cid, stream=True, follow=True, stdout=True, stderr=True)
        got = 0
        for chunk in stream:
            got += chunk.count(b"\n")
            busy(delay)
        api.wait(cid)
        return got, time.perf_counter() - start
    finally:
        api.remove_container(cid, force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--delay-us", type=float, default=50.0, help="reader's time per received frame")
    parser.add_argument("--tries", type=int, default=4)
    parser.add_argument("--modes", default="follow,follow-outlives,attach", help="comma-separated")
    args = parser.parse_args()
    api = docker.APIClient(base_url="unix:///var/run/docker.sock", version="auto")
    print(f"Docker {api.version()['Version']}, {args.lines:,} lines, reader {args.delay_us:g} us per frame")
    for mode in args.modes.split(","):
        for attempt in range(args.tries):
            got, elapsed = one(api, mode, args.lines, args.delay_us / 1e6)
            cut = got < args.lines
            print(
                f"{mode:15s} try {attempt + 1}: {got:>9,d} of {args.lines:,} lines in {elapsed:6.2f} s"
                + ("   <-- cut short" if cut else ""),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
