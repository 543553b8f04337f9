"""The DooD page with 200 dood containers: in a real browser inside Airflow's nav (P7), and one request alone.

    .venv/bin/python benchmarks/bench_ui.py [--containers 200] [--running 50] [--exited 150] [--loads 10]
                                            [--requests 20] [--via-proxy] [--no-browser] [--append FILE]

Creates N containers labelled as dood's (`dood.managed=true`, `dood.stack=dood`, task identity labels) from
the test image: `--running` of them running `sleep` (a stats sample each), `--exited` ended with an exit
code (an inspect each), the rest only created. Then:

* **Browser (P7)**: Airflow's api-server alone (`airflow db migrate`, `airflow api-server` on 127.0.0.1,
  SQLite, Airflow's login on through the SimpleAuthManager), headless Chromium (Debian's, Playwright).
  Each load is a fresh browser context (empty cache, the login's cookie) opening `/plugin/dood`, the DooD
  page inside Airflow's nav, as a user opening "DooD" in a new tab. Times are the browser's own clock
  (`performance.timeOrigin + now()`), recorded by a MutationObserver in every frame, from the navigation's
  start: Airflow's shell drawn (its nav bar), the plugin's iframe inserted, the iframe's table complete
  (every row parsed). Goal: the full table < 1.5 s after the shell. The first load (the api-server's
  caches cold) and the median of the others are reported, with the server's own phases (the page's
  `Server-Timing` header).
* **One request** (`--requests`): the plugin's FastAPI app through Starlette's TestClient (routing, the
  engine calls, the Jinja rendering: everything but the socket and the browser), Airflow's login and the
  task-state query stubbed; directly, or through `dood-proxy --read-only` with `--via-proxy`. Goal < 1 s.

The containers are removed afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import docker
import requests

IMAGE = os.environ.get("DOOD_BENCH_IMAGE", "dood-test-busybox:latest")


def create_containers(api, count: int, tag: str, running: int = 0, exited: int = 0) -> list[str]:
    """`count` dood-labelled containers: the first `running` started running `sleep`, the next `exited`
    started running `true` (they end at once, with an exit code: a row an inspect completes), the rest only
    created. Started 8 at a time."""
    ids = []
    for i in range(count):
        labels = {
            "dood.managed": "true",
            "dood.stack": "dood",
            "dood.dag_id": f"bench_ui_dag_{i % 10}",
            "dood.run_id": f"manual__2026-01-01T00:00:{i % 60:02d}+00:00",
            "dood.task_id": f"task_{i}",
            "dood.map_index": "-1",
            "dood.try_number": "1",
            "bench": tag,
        }
        command = ["sleep", "3600"] if i < running else ["true"]
        ids.append(api.create_container(IMAGE, command, labels=labels, name=f"bench-ui-{tag}-{i}")["Id"])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(api.start, ids[: running + exited]))
    if exited:
        for cid in ids[running : running + exited]:
            api.wait(cid, timeout=60)
    return ids


@contextmanager
def read_only_proxy():
    root = Path(tempfile.mkdtemp(prefix="dood-bench-ui-"))
    sock = root / "ro.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "dood.proxy", "--read-only", "--listen", f"unix://{sock}", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("dood-proxy --read-only did not start")
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(url: str, requests: int, expected: int) -> tuple[float, float, int]:
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.testclient import TestClient

    from dood.ui import access, overview, routes
    from dood.ui.app import create_app
    from dood.ui.every_host import Engines
    from dood.ui.reader import EngineReader

    class Everyone:
        def is_authorized_dag(self, **kwargs):
            return True

    reader = EngineReader(docker.APIClient(base_url=url, version="auto", timeout=15))
    routes.engines = lambda: Engines({"": reader})
    access._auth_manager = lambda: Everyone()
    # Task states come from one SQL query on Airflow's database, which this benchmark has not got; created
    # containers never need one (only running ones can be orphans). Other sessions' running containers may.
    overview.task_states = lambda keys: {}
    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    client = TestClient(app)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/containers")
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text[:500]
    shown = response.text.count("data-container=")
    assert shown >= expected, f"the page shows {shown} containers, expected at least {expected}"
    return times[0], statistics.median(times[1:] or times), shown


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
USER, PASSWORD = "admin", "bench-ui-pw"
#: What the top page records, the first time it is true (ms on the browser's clock). The iframe's own times
#: come from its Navigation Timing entry (`domInteractive`: the whole document, so the table, parsed).
MARKS_SCRIPT = """
(() => {
  if (window.top !== window) return;
  const marks = (window.__doodMarks = window.__doodMarks || { start: performance.timeOrigin });
  const mark = (name) => { if (!(name in marks)) marks[name] = performance.timeOrigin + performance.now(); };
  const check = () => {
    if (document.querySelector(%(shell)s)) mark("shell");
    if (document.querySelector("iframe")) mark("iframe");
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true, attributes: true });
  check();
})();
"""
FRAME_TIMES = """
() => {
  const n = performance.getEntriesByType("navigation")[0];
  if (!n || !n.domInteractive) return null;
  const table = document.getElementById("containers");
  const rows = table && table.tBodies[0] ? table.tBodies[0].rows.length : 0;
  const at = (ms) => performance.timeOrigin + ms;
  return { origin: performance.timeOrigin, request: at(n.requestStart), response: at(n.responseStart),
           table: at(n.domInteractive), rows: rows };
}
"""
#: Airflow 3.3's shell is drawn: its nav bar on the left (a Chakra button per page: Home, Dags, ...).
SHELL_SELECTOR = "a[aria-label=Dags]"


@contextmanager
def api_server(engine_url: str):
    """Airflow's api-server alone, with its login on; yields its base URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.airflow_stack import AIRFLOW, stack_env
    from tests.ports import free_port

    home = Path(tempfile.mkdtemp(prefix="dood-bench-ui-airflow-"))
    (home / "dags").mkdir()
    port = free_port()
    env = stack_env(home, port)
    (home / "dood.yaml").write_text(f"docker: {{url: '{engine_url}'}}\nruns_root: {home / 'runs'}\n")
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    env.update(
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        }
    )
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, check=False)
    if migrate.returncode:
        raise SystemExit(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
    log = open(home / "api-server.log", "ab")  # closed below
    args = [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"airflow api-server exited:\n{(home / 'api-server.log').read_text()[-3000:]}")
            try:
                health = requests.get(f"{url}/api/v2/monitor/health", timeout=5).json()
                if (health.get("metadatabase") or {}).get("status") == "healthy":
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit("waited 300 s for the api-server's health endpoint to answer healthy")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def browser_loads(url: str, loads: int, expected: int) -> list[dict[str, float]]:
    """`loads` fresh loads of the DooD page inside Airflow's nav; each: ms from the navigation's start to
    the shell, the iframe, the full table, and the server's phases of the iframe's request."""
    from playwright.sync_api import sync_playwright

    script = MARKS_SCRIPT % {"shell": json.dumps(SHELL_SELECTOR), "rows": expected}
    found = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            login = browser.new_context()
            page = login.new_page()
            page.goto(f"{url}/", wait_until="domcontentloaded")
            page.wait_for_selector("input[name=username]", timeout=120_000)
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(lambda u: "/auth/" not in u, timeout=120_000)
            page.wait_for_selector(SHELL_SELECTOR, timeout=120_000)
            state = login.storage_state()
            login.close()
            for _ in range(loads):
                context = browser.new_context(storage_state=state, viewport={"width": 1400, "height": 900})
                context.add_init_script(script)
                page = context.new_page()
                timing: dict[str, str] = {}
                page.on("response", lambda r, timing=timing: _keep_server_timing(r, timing))
                page.goto(f"{url}/plugin/dood", wait_until="commit")
                frame = _wait_for_frame(page)
                try:
                    frame.wait_for_function(FRAME_TIMES, timeout=60_000)
                except Exception as exc:
                    raise SystemExit("waited 60 s for the DooD page's iframe to be parsed") from exc
                try:
                    page.wait_for_function("() => window.__doodMarks && window.__doodMarks.shell", timeout=60_000)
                except Exception as exc:
                    seen = page.evaluate(
                        "() => [location.href, JSON.stringify(window.__doodMarks || null),"
                        " [...document.querySelectorAll('a[aria-label]')].map(a => a.getAttribute('aria-label'))]"
                    )
                    raise SystemExit(f"waited 60 s for Airflow's shell ({SHELL_SELECTOR}); the page: {seen}") from exc
                top = page.evaluate("() => window.__doodMarks")
                inner = frame.evaluate(FRAME_TIMES)
                if inner["rows"] < expected:
                    shown = frame.evaluate("() => document.body.innerText.slice(0, 1500)")
                    raise SystemExit(f"the DooD page shows {inner['rows']} rows, expected {expected}:\n{shown}")
                start = top["start"]
                load = {name: top[name] - start for name in ("shell", "iframe") if name in top}
                load.update({name: inner[name] - start for name in ("origin", "request", "response", "table")})
                load.update(_server_timing(timing.get("server", "")))
                found.append(load)
                context.close()
        finally:
            browser.close()
    return found


def _keep_server_timing(response, timing: dict[str, str]) -> None:
    if response.url.split("?")[0].endswith("/dood/containers"):
        timing["server"] = response.headers.get("server-timing", "")


def _wait_for_frame(page, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:  # Airflow's own URL for the view ends the same way: the main frame is not it
            if frame is not page.main_frame and urlsplit(frame.url).path.endswith("/dood/containers"):
                return frame
        page.wait_for_timeout(20)
    raise SystemExit(f"waited {timeout:g} s for the DooD page's iframe inside Airflow's nav (/plugin/dood)")


def _server_timing(header: str) -> dict[str, float]:
    """`Server-Timing: list;dur=12.3, inspect;dur=4` -> {"server.list": 12.3, ...}."""
    found = {}
    for part in filter(None, (p.strip() for p in header.split(","))):
        name, _, rest = part.partition(";")
        if rest.startswith("dur="):
            try:
                found[f"server.{name}"] = float(rest[4:])
            except ValueError:
                pass
    return found


def _ms(values: list[float]) -> str:
    return f"{values[0]:.0f} ms" if len(values) == 1 else f"{statistics.median(values):.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--running", type=int, default=50, help="how many run `sleep` (a stats sample each)")
    parser.add_argument("--exited", type=int, default=150, help="how many ended (an inspect each)")
    parser.add_argument("--loads", type=int, default=10, help="browser loads of the page inside Airflow's nav")
    parser.add_argument("--requests", type=int, default=20, help="TestClient requests (0: none)")
    parser.add_argument("--via-proxy", action="store_true")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    engine = "unix:///var/run/docker.sock"
    api = docker.APIClient(base_url=engine, version="auto")
    tag = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    ids = create_containers(api, args.containers, tag, running=args.running, exited=args.exited)
    created_in = time.perf_counter() - started
    listed = len(api.containers(all=True, filters={"label": ["dood.managed=true"]}))
    browser: list[dict[str, float]] = []
    results = {}
    try:
        if not args.no_browser:
            with api_server(engine) as url:
                browser = browser_loads(url, args.loads, args.containers)
        if args.requests:
            results["direct socket"] = measure(engine, args.requests, args.containers)
            if args.via_proxy:
                with read_only_proxy() as url:
                    results["dood-proxy --read-only"] = measure(url, args.requests, args.containers)
    finally:
        for cid in ids:
            api.remove_container(cid, force=True)
    lines = [
        "",
        f"## DooD page with {args.containers} containers ({dt.date.today()}, `benchmarks/bench_ui.py`)",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}, Docker {api.version().get('Version')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end. {args.containers} containers "
        f"({args.running} running `sleep`, {args.exited} exited, the rest created; {listed} dood containers "
        f"on the engine in all) made in {created_in:.1f} s.",
    ]
    if browser:
        cold, warm = browser[:1], browser[1:] or browser[:1]
        lines += [
            "",
            f"In the browser (P7): {len(browser)} fresh loads of `/plugin/dood` (Airflow's nav, the page in its "
            "iframe), headless Chromium, Airflow's api-server alone (SQLite, login on); ms from the navigation's "
            "start.",
            "",
            "| Load | Airflow's shell | iframe inserted | iframe request sent | its first byte | full table "
            "| table after shell "
            "| server: whole page (list · inspect · stats · task states · render) | Goal < 1.5 s after shell |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, group in (("first (api-server cold)", cold), (f"median of {len(warm)} others", warm)):

            def col(key: str, group=group) -> list[float]:
                return [load.get(key, float("nan")) for load in group]

            after = [load["table"] - load.get("shell", 0) for load in group]
            server = " · ".join(_ms(col(f"server.{k}")) for k in ("list", "inspect", "stats", "task_states", "render"))
            ok = "met" if statistics.median(after) < 1500 else "**missed**"
            lines.append(
                f"| {name} | {_ms(col('shell'))} | {_ms(col('iframe'))} | {_ms(col('request'))} "
                f"| {_ms(col('response'))} | {_ms(col('table'))} | {_ms(after)} "
                f"| {_ms(col('server.total'))} ({server}) | {ok} |"
            )
    if results:
        lines += [
            "",
            f"One request alone: {args.requests} requests of `/dood/containers` each (TestClient: routing, "
            "engine calls, Jinja rendering; Airflow's login and the task-state query stubbed).",
            "",
            "| Engine endpoint | First request (cold caches) | Median of the others | Rows shown | Goal |",
            "|---|---|---|---|---|",
        ]
        for name, (cold_s, warm_s, shown) in results.items():
            ok = "met" if max(cold_s, warm_s) < 1 else "**missed**"
            lines.append(f"| {name} | {cold_s * 1000:.0f} ms | {warm_s * 1000:.0f} ms | {shown} | < 1 s: {ok} |")
    text = "\n".join(lines) + "\n"
    print(text)
    for load in browser:
        print({k: round(v) for k, v in load.items()})
    if args.append:
        with args.append.open("a", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
