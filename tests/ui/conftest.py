"""Browser-test fixtures: a real Airflow (scheduler, dag-processor, triggerer, api-server on 127.0.0.1, SQLite,
a temporary AIRFLOW_HOME) with Airflow's login on (SimpleAuthManager, known passwords; `outsider` may not
read `*secret*` DAGs), and headless Chromium from Debian driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import docker
import pytest
import requests

from tests.integration.airflow_stack import AirflowStack, remove_stack_containers, stack_env
from tests.ports import free_port

HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "ui-screenshots"
USERS = {"admin": "admin-ui-test-pw", "outsider": "outsider-ui-test-pw"}
IMAGE = "dood-test-busybox:latest"


#: Evaluate's result also has text beyond ASCII, a right-to-left override (the Container tab shows it as
#: <U+202E>) and many metrics with long names (the Model metrics table scrolls inside its box).
WIDE = ", ".join(
    ['\\"model\\": \\"𝐱-net café\\"', '\\"note\\": \\"abc\u202edcba\\"']
    + [f'\\"validation_metric_{i:02d}\\": 0.{i:02d}' for i in range(24)]
)


def signed_in_env(home: Path, port: int) -> dict[str, str]:
    """The UI stacks' users (USERS, their passwords in a file under `home`), the DAG-restricted auth manager and
    the api-server's own URL: what a browser test signs in with."""
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,outsider:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.ui.auth_manager.DagRestrictedAuthManager",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])),
    }


def dood_config(home: Path) -> str:
    evaluate = (
        # The whole date, not the day: the scheduled run's date is today's, and on the 2nd of a month it would
        # promote too (CI failed on 2026-12-02 with two champions).
        "d=${DOOD_DATA_INTERVAL_START:0:10}; "
        "case $d in 2026-01-01) a=0.88;; 2026-01-02) a=0.93;; 2026-01-03) a=0.83;; *) a=0.9;; esac; "
        'printf "{\\"accuracy\\": %s, \\"f1\\": 0.8, ' + WIDE + '}" "$a" > "$DOOD_RESULT_FILE"'
    )
    promote = (
        'case "${DOOD_DATA_INTERVAL_START:0:10}" in '
        '2026-01-02) printf "{\\"promoted\\": true}" > "$DOOD_RESULT_FILE";; '
        "*) exit 99;; esac"
    )
    step = "{{image: dood-test-busybox, command: [sh, -c, '{}']}}"
    return f"""runs_root: {home}/runs
mount_discovery: {{mode: 'off'}}
policy:
  allowed_host_roots: ['{home}']
pipelines:
  ui_ml:
    schedule: "@daily"
    start_date: 2026-01-01
    max_active_runs: 2
    retries: 0
    data_root: {home}/ml/data
    model_root: {home}/ml/models
    artifact_root: {home}/ml/artifacts
    quality_gate: {{metric: accuracy, minimum: 0.85}}
    hyperparameters:
      n_estimators: {{type: integer, default: 100, minimum: 10, maximum: 500, description: Trees in the forest}}
    steps:
      prepare: {step.format("echo prepared")}
      train: {step.format("echo trained")}
      evaluate: {step.format(evaluate)}
      promote: {step.format(promote)}
"""


class UiStack(AirflowStack):
    """The stack with Airflow's login on: REST calls carry the admin's token."""

    token: str = ""

    def login(self, username: str = "admin") -> str:
        response = requests.post(
            f"{self.api_url}/auth/token", json={"username": username, "password": USERS[username]}, timeout=30
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["access_token"]

    def api(self, method, path, **kwargs):
        kwargs.setdefault("headers", {})["Authorization"] = f"Bearer {self.token}"
        return super().api(method, path, **kwargs)

    def wait_parsed(self, dag_id: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        self._wait_until(
            lambda: requests.get(f"{self.api_url}/api/v2/dags/{dag_id}", headers=headers, timeout=10).ok,
            120,
            f"DAG {dag_id} to be parsed",
        )

    def trigger(self, dag_id: str) -> str:
        self.wait_parsed(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None})["dag_run_id"]


@pytest.fixture(scope="session")
def docker_api():
    api = docker.APIClient(base_url="unix:///var/run/docker.sock")
    api.ping()
    api.inspect_image(IMAGE)  # bash scripts/build-images.sh test
    return api


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory, docker_api):
    home = tmp_path_factory.mktemp("airflow-ui")
    os.chmod(home, 0o755)
    shutil.copytree(HERE / "dags", home / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (home / "data").mkdir(mode=0o755)
    (home / "data" / "input.csv").write_text("x\n1\n")
    port = free_port()
    env = stack_env(home, port)
    (home / "dood.yaml").write_text(dood_config(home))
    env.update(signed_in_env(home, port))
    stack = UiStack(home, f"http://127.0.0.1:{port}", env)
    try:
        stack.start()
        stack.token = stack.login()
        yield stack
    finally:
        stack.stop()
        remove_stack_containers(docker_api, home, "dood_ui")  # only this stack's: another may run beside it


@pytest.fixture(scope="module")  # Playwright's sync API runs an event loop: ended before other tests run
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: bash scripts/ensure-chromium.sh (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in_page(browser, stack: UiStack, username: str):
    """A browser page logged in through Airflow's real login form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{stack.api_url}/", wait_until="domcontentloaded")
    page.wait_for_selector("input[name=username]", timeout=60_000)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", USERS[username])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
    return page


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_until(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
