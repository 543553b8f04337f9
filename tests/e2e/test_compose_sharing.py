"""The compose stack shared by a team, with the simple auth manager (issue 21.4), in a stack of its own
(`dood-teams`, tests/e2e/team_stack.py), and what README says about Airflow's own UI, checked in a real browser.

- Extra users (AIRFLOW_EXTRA_USERS) keep their passwords when `up -d` runs airflow-init again.
- The UI's backfill dialog proposes 1 run at a time (Airflow 3.3.2), not 10.
- A finished DoodContainerOperator task has the "Container" extra link, shown on its Details tab.
- The trigger form clamps an out-of-range typed value into its range without a word; REST refuses it.

Runs under `flock /tmp/dood-compose.lock` (DOOD_E2E=1 or -m e2e).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e.conftest import REPO, log, wait_for
from tests.e2e.team_stack import ADMIN, TeamStack

DAG_ID = "dood_breast_cancer"
CHROMIUM = "/usr/bin/chromium"
EXTRA = "alice"
SCREENSHOTS = REPO / "var" / "ui-screenshots"


@pytest.fixture(scope="module")
def stack(request):
    team = TeamStack.set_up(AIRFLOW_EXTRA_USERS=f",{EXTRA}:viewer")
    try:
        team.up()
        team.admin_token = team.token(ADMIN, team.password).json()["access_token"]
        yield team
    finally:
        team.down(failed=request.session.testsfailed > 0)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: bash scripts/ensure-chromium.sh (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


def signed_in(browser, stack: TeamStack, username: str, password: str):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{stack.api_url}/", wait_until="domcontentloaded")
    page.wait_for_selector("input[name=username]", timeout=60_000)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/" not in url and "login" not in url, timeout=60_000)
    return page


def passwords(stack: TeamStack) -> dict[str, str]:
    return json.loads(stack.exec("airflow-apiserver", "cat", "/opt/airflow/secrets/simple_auth_manager_passwords.json"))


def init_started(stack: TeamStack) -> str:
    return stack.inspect("airflow-init", "{{.State.StartedAt}}")


def test_extra_users_keep_their_passwords_when_airflow_init_runs_again(stack):
    given = wait_for(f"the api-server to give {EXTRA} a password", lambda: passwords(stack).get(EXTRA), timeout=60)
    assert stack.token(EXTRA, given).status_code == 201, f"{EXTRA} cannot log in with the password given"
    before = init_started(stack)

    stack.up()  # `docker-compose up -d` again: airflow-init runs again
    assert init_started(stack) != before, "airflow-init did not run again on `up -d`"
    kept = passwords(stack)
    assert kept.get(EXTRA) == given, f"{EXTRA}'s password was not kept: {sorted(kept)}"
    response = stack.token(EXTRA, given)
    assert response.status_code == 201, f"{EXTRA} cannot log in after `up -d`: {response.status_code} {response.text}"
    assert stack.token(ADMIN, stack.password).status_code == 201


def test_backfill_dialog_proposes_one_run_at_a_time(stack, browser):
    page = signed_in(browser, stack, ADMIN, stack.password)
    page.goto(f"{stack.api_url}/dags/{DAG_ID}", wait_until="domcontentloaded")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Backfill", exact=True).first.click()
    field = dialog.locator("input[name=max_active_runs]")
    field.wait_for(timeout=30_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "compose-backfill-dialog.png"))
    log(f"backfill dialog: max_active_runs={field.input_value()!r} (max {field.get_attribute('max')!r})")
    assert field.input_value() == "1", field.input_value()
    page.context.close()


def test_trigger_form_clamps_out_of_range_values_while_rest_refuses_them(stack, browser):
    token = stack.admin_token
    refused = stack.api(
        token, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"n_estimators": 9999}}
    )
    log(f"REST n_estimators=9999: {refused.status_code} {refused.text[:300]}")
    assert refused.status_code == 400, refused.text

    page = signed_in(browser, stack, ADMIN, stack.password)
    page.goto(f"{stack.api_url}/dags/{DAG_ID}", wait_until="domcontentloaded")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    field = dialog.locator("input[name=element_n_estimators]")
    field.wait_for(timeout=30_000)
    field.fill("9999")
    field.blur()
    shown = field.input_value()
    before = {r["dag_run_id"] for r in stack.api(token, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]}
    unpause = dialog.get_by_text(f"Unpause {DAG_ID} on trigger")
    if unpause.count() and dialog.locator("input[type=checkbox]").first.is_checked():
        unpause.click()
    dialog.get_by_role("button", name="Trigger").last.click()

    def created():
        runs = stack.api(token, "GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        return [r for r in runs if r["dag_run_id"] not in before]

    [run] = wait_for("the run the trigger form created", created, timeout=60)
    stack.api(token, "DELETE", f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}")
    log(f"UI n_estimators typed 9999: field shows {shown!r}, run conf {run['conf']}")
    assert run["conf"]["n_estimators"] == 500, run["conf"]  # the maximum, without a word
    page.context.close()


def test_the_task_page_shows_the_container_extra_link(stack, browser):
    token = stack.admin_token
    assert stack.api(token, "PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).ok
    run = stack.api(token, "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None}).json()
    run_id = run["dag_run_id"]
    try:
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/prepare"
        # While the step runs, Airflow 3 has no URL yet: the worker stores it (XCom) when the try ends or defers.
        state = wait_for(
            "the prepare step to start",
            lambda: stack.api(token, "GET", path).json().get("state") in ("running", "success"),
            timeout=300,
            interval=0.5,
        )
        if state:
            running = stack.api(token, "GET", f"{path}/links").json()
            log(f"links of prepare while {stack.api(token, 'GET', path).json().get('state')}: {running}")
        wait_for(
            "the prepare step to succeed",
            lambda: stack.api(token, "GET", path).json().get("state") == "success",
            timeout=300,
            interval=3,
            describe=lambda: str(stack.api(token, "GET", path).json().get("state")),
        )
        links = stack.api(token, "GET", f"{path}/links").json()
        log(f"links of prepare: {links}")
        assert (links.get("extra_links") or {}).get("Container"), links

        page = signed_in(browser, stack, ADMIN, stack.password)
        # The "Extra Links" box is on the task instance's Details tab (Airflow 3.3), not on the Logs tab the task
        # page opens with; and it is not the plugin's "Container" tab, which has the same href.
        page.goto(f"{stack.api_url}/dags/{DAG_ID}/runs/{run_id}/tasks/prepare/details", wait_until="domcontentloaded")
        box = page.get_by_text("Extra Links", exact=True).locator("xpath=..")
        button = box.get_by_role("link", name="Container")
        button.wait_for(timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "compose-task-extra-link.png"), full_page=True)
        assert button.get_attribute("href").endswith("/tasks/prepare/plugin/dood-container")
        page.context.close()
    finally:
        stack.api(token, "PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": True})
