"""dood's pages in a real browser: Airflow's api-server with its login on, headless Chromium, a real engine.

The DooD page shows a running container with its task link (and not another DAG's to a user who may not
read it), the Container tab its host-side mounts and output tail (attacker-controlled text escaped), the
Model metrics tab one point per backfilled run, the quality gate and the champion; every endpoint refuses
an unauthenticated request. Screenshots go to var/ui-screenshots/.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.ui.conftest import screenshot, signed_in_page, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SLEEP, SECRET, PIPELINE = "dood_ui_sleep", "dood_ui_secret", "dood_ui_ml"
ENDPOINTS = (
    "/dood/containers",
    "/dood/containers?fragment=1",
    "/dood/api/containers",
    "/dood/static/dood.css",
    "/dood/static/dood.js",
    f"/dood/dags/{SLEEP}/runs/r/tasks/run/container",
    f"/dood/dags/{PIPELINE}/metrics",
)


@pytest.fixture(scope="module")
def backfill(ui_stack):
    """Three dates of the pipeline, backfilled through the scheduler (after the containers' tests: SQLite
    serialises every write, and a task whose first call waits too long on it fails)."""
    ui_stack.wait_parsed(PIPELINE)
    # The scheduler queues no task of a paused DAG, backfill runs included: unpause (the latest interval
    # then gets its scheduled run too; the backfill's three runs are told apart by their run type).
    ui_stack.api("PATCH", f"/dags/{PIPELINE}", json={"is_paused": False})
    body = {"dag_id": PIPELINE, "from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-03T00:00:00Z"}
    for _ in range(20):  # SQLite: "Database is locked" (503) while the scheduler writes; asked again
        try:
            return ui_stack.api("POST", "/backfills", json={**body, "max_active_runs": 2})
        except AssertionError as exc:
            if " 503 " not in str(exc):
                raise
            time.sleep(0.5)
    pytest.fail("the backfill could not be created (SQLite stayed locked)")


@pytest.fixture(scope="module")
def running(ui_stack, docker_api):
    """A running container of each sleeping DAG: {dag_id: (run_id, list entry)}."""
    runs = {dag_id: ui_stack.trigger(dag_id) for dag_id in (SLEEP, SECRET)}

    def up():
        found = {}
        for dag_id in runs:
            listed = docker_api.containers(filters={"label": [f"dood.dag_id={dag_id}"], "status": "running"})
            if listed:
                found[dag_id] = (runs[dag_id], listed[0])
        return found if len(found) == len(runs) else None

    return wait_until(up, 120, "a running container of each sleeping DAG")


def test_every_endpoint_refuses_unauthenticated_requests(ui_stack):
    for path in ENDPOINTS:
        anonymous = requests.get(f"{ui_stack.api_url}{path}", timeout=30)
        assert anonymous.status_code in (401, 403), (path, anonymous.status_code, anonymous.text[:200])
        forged = requests.get(f"{ui_stack.api_url}{path}", headers={"Authorization": "Bearer x.y.z"}, timeout=30)
        assert forged.status_code in (401, 403), (path, forged.status_code)
        cookie = requests.get(f"{ui_stack.api_url}{path}", cookies={"_token": "not-a-jwt"}, timeout=30)
        assert cookie.status_code in (401, 403), (path, cookie.status_code)


def test_dood_page_lists_the_running_container_with_its_task_link(ui_stack, browser, running):
    run_id, entry = running[SLEEP]
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/plugin/dood")
    frame = page.frame_locator("iframe")
    row = frame.locator(f"tr[data-container='{entry['Id'][:12]}']")
    row.wait_for(timeout=30_000)
    assert "running" in row.inner_text()
    assert SLEEP in row.inner_text() and run_id in row.inner_text()
    href = row.locator("a.ti-link").get_attribute("href")
    assert href.startswith(f"/dags/{SLEEP}/runs/") and href.split("?")[0].endswith("/tasks/run")
    assert frame.locator("#summary").inner_text().count("running") >= 1
    page.wait_for_timeout(6000)  # one self-refresh: CPU % needs two samples
    screenshot(page, "dood-page")
    assert row.locator("a.ti-link").get_attribute("target") == "_top"  # it leaves the iframe for Airflow's page
    opened = page.goto(f"{ui_stack.api_url}{href}", wait_until="commit")
    assert opened is not None and opened.status == 200  # Airflow's own task instance page answers there
    page.context.close()


def test_a_user_sees_only_containers_of_dags_they_may_read(ui_stack, browser, running):
    secret_run, secret = running[SECRET]
    _, visible = running[SLEEP]
    page = signed_in_page(browser, ui_stack, "outsider")
    page.goto(f"{ui_stack.api_url}/dood/containers")
    page.locator(f"tr[data-container='{visible['Id'][:12]}']").wait_for(timeout=30_000)
    assert page.locator(f"tr[data-container='{secret['Id'][:12]}']").count() == 0
    assert SECRET not in page.content()
    listed = page.request.get(f"{ui_stack.api_url}/dood/api/containers").json()["containers"]
    assert {c["dag_id"] for c in listed if c["dag_id"].startswith("dood_ui")} <= {SLEEP, PIPELINE}
    tab = page.request.get(f"{ui_stack.api_url}/dood/dags/{SECRET}/runs/{secret_run}/tasks/run/container")
    assert tab.status == 403
    page.context.close()


def test_container_tab_shows_host_mounts_output_tail_and_escapes_everything(ui_stack, browser, running):
    run_id, _ = running[SLEEP]
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/dags/{SLEEP}/runs/{run_id}/tasks/run/plugin/dood-container")
    frame = page.frame_locator("iframe")
    frame.locator("#mounts").wait_for(timeout=30_000)
    assert str(ui_stack.home / "data") in frame.locator("#mounts").inner_text()
    logs = frame.locator("#log-tail").inner_text()
    assert "hello-from-dood" in logs
    assert "<script>window.pwned=1</script><b>bold</b>" in logs  # shown as text, not run
    assert "<img src=x onerror=window.pwned=1>" in frame.locator("#labels").inner_text()
    inner = next(f for f in page.frames if "/dood/dags/" in f.url)
    assert inner.evaluate("window.pwned") is None
    screenshot(page, "container-tab")
    page.context.close()


def test_container_tab_shows_the_output_as_a_terminal_would_and_times_as_airflow_does(ui_stack, browser, running):
    """A progress bar redrawn with carriage returns is one line in its last state, colours are dropped, a
    right-to-left override is shown as <U+202E> (the DAG's script: tests/ui/dags/dood_ui_dags.py)."""
    run_id, _ = running[SLEEP]
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/dags/{SLEEP}/runs/{run_id}/tasks/run/plugin/dood-container")
    frame = page.frame_locator("iframe")
    frame.locator("#log-tail").wait_for(timeout=30_000)
    tail = frame.locator("#log-tail")
    wait_until(lambda: "name: abc" in tail.inner_text(), 30, "the script's last line in the output tail")
    lines = tail.inner_text().splitlines()
    assert [line for line in lines if "/100" in line] == ["100%|##########| 100/100"], lines
    assert "INFO trained" in lines and not any("\x1b" in line or "[32m" in line for line in lines), lines
    assert "name: abc<U+202E>dcba" in lines and not any("\u202e" in line for line in lines), lines
    started = frame.locator("#container time").first
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", started.inner_text()), started.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", started.get_attribute("title") or "")
    screenshot(page, "container-tab-terminal")
    page.context.close()


def test_a_container_marked_failed_leaves_the_dood_page(ui_stack, browser, running, docker_api):
    run_id, entry = running[SLEEP]
    ui_stack.set_task_state(SLEEP, run_id, "failed")
    wait_until(lambda: not docker_api.containers(all=True, filters={"id": entry["Id"]}), 60, "the container to go")
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/dood/containers?dag_id={SLEEP}")
    page.locator("#containers").wait_for()
    assert page.locator(f"tr[data-container='{entry['Id'][:12]}']").count() == 0
    page.context.close()


def test_trigger_form_has_human_titles_ranges_no_needless_required_stars_and_reaches_the_run(ui_stack, browser):
    """Airflow's own trigger dialog, filled in as a person would (issue 11.5). Before the backfill: the DAG
    is still paused, so the run it creates is read back and deleted without running."""
    ui_stack.wait_parsed(PIPELINE)
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/dags/{PIPELINE}", wait_until="domcontentloaded")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("input[name=element_n_estimators]").wait_for(timeout=30_000)
    text = dialog.inner_text()
    assert "Trees in the forest" in text and "n_estimators, 10–500; default 100." in text
    assert "CPUs only" in text  # gpus explained: its maximum is 0 for this pipeline
    # Every run parameter has a default: none is marked required.
    labels = dialog.locator("label:has(.chakra-field__requiredIndicator)")
    assert labels.count() == 0, labels.all_inner_texts()
    screenshot(page, "trigger-form")
    dialog.locator("input[name=element_n_estimators]").fill("42")
    dialog.locator("input[name=element_image_tag]").fill("")  # emptied: the pipeline's tag
    unpause = dialog.get_by_text(f"Unpause {PIPELINE} on trigger")
    if unpause.count() and dialog.locator("input[type=checkbox]").first.is_checked():
        unpause.click()
    before = {r["dag_run_id"] for r in ui_stack.api("GET", f"/dags/{PIPELINE}/dagRuns")["dag_runs"]}
    dialog.get_by_role("button", name="Trigger").last.click()

    def created():
        runs = ui_stack.api("GET", f"/dags/{PIPELINE}/dagRuns")["dag_runs"]
        return [r for r in runs if r["dag_run_id"] not in before]

    [run] = wait_until(created, 60, "the run the form created")
    try:
        assert run["conf"]["n_estimators"] == 42, run["conf"]
        assert run["conf"].get("image_tag") in (None, ""), run["conf"]
        assert ui_stack.api("GET", f"/dags/{PIPELINE}")["is_paused"] is True
    finally:
        ui_stack.api("DELETE", f"/dags/{PIPELINE}/dagRuns/{run['dag_run_id']}")
    page.context.close()


def test_metrics_tab_has_a_point_per_backfilled_run_the_gate_and_the_champion(ui_stack, browser, backfill):
    def finished():
        runs = ui_stack.api("GET", f"/dags/{PIPELINE}/dagRuns")["dag_runs"]
        done = [r for r in runs if r["run_type"] == "backfill" and r["state"] in ("success", "failed")]
        return runs if len(done) == 3 else None

    runs = wait_until(finished, 420, "three finished backfill runs", every=2)
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/dags/{PIPELINE}/plugin/dood-metrics")
    frame = page.frame_locator("iframe")
    frame.locator("svg.chart").wait_for(timeout=30_000)
    assert frame.locator("svg .point.backfill").count() == 3
    assert frame.locator("svg .point").count() >= 3  # and the scheduled run, once it has finished
    assert frame.locator("svg line.threshold").count() == 1
    assert frame.locator("svg .champion").count() == 1
    table = frame.locator("#runs").inner_text()
    for run in runs:
        assert run["dag_run_id"] in table
    assert "0.93" in table and "★ promoted" in table
    screenshot(page, "metrics-tab")
    promoted = [r for r in runs if r["logical_date"].startswith("2026-01-02")][0]
    links = ui_stack.api("GET", f"/dags/{PIPELINE}/dagRuns/{promoted['dag_run_id']}/taskInstances/evaluate/links")
    assert links["extra_links"]["Container"].endswith("/tasks/evaluate/plugin/dood-container"), links
    page.context.close()


def test_metrics_table_scrolls_in_its_box_result_shows_unicode_and_other_dags_get_a_note(ui_stack, browser, backfill):
    """Evaluate returns 26 metrics with long names: the table scrolls inside its box, the page does not; the
    dates are Airflow's `YYYY-MM-DD HH:MM:SS` (the full value on hover); evaluate's result on its Container
    tab shows `𝐱-net café` as text and its right-to-left override as <U+202E>; a DAG that is not a pipeline
    gets a short note on the tab Airflow shows on every DAG."""

    def finished():
        runs = ui_stack.api("GET", f"/dags/{PIPELINE}/dagRuns")["dag_runs"]
        done = [r for r in runs if r["run_type"] == "backfill" and r["state"] in ("success", "failed")]
        return done if len(done) == 3 else None

    done = wait_until(finished, 420, "three finished backfill runs", every=2)
    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/dags/{PIPELINE}/plugin/dood-metrics")
    frame = page.frame_locator("iframe")
    frame.locator("#runs").wait_for(timeout=30_000)
    assert frame.locator("#runs th").all_inner_texts()[-2] == "validation_metric_23"
    inner = next(f for f in page.frames if f.url.split("?")[0].endswith(f"/dood/dags/{PIPELINE}/metrics"))
    widths = inner.evaluate(
        "() => { const box = document.getElementById('runs-box'), page = document.documentElement;"
        " return {box: box.scrollWidth, boxShown: box.clientWidth, page: page.scrollWidth, shown: page.clientWidth}; }"
    )
    assert widths["box"] > widths["boxShown"] and widths["page"] <= widths["shown"], widths
    date = frame.locator("#runs td.when time").first
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", date.inner_text()), date.inner_text()
    assert (date.get_attribute("title") or "").startswith(date.inner_text()[:10] + "T")
    screenshot(page, "metrics-tab-wide")

    page.goto(f"{ui_stack.api_url}/dags/{PIPELINE}/runs/{done[0]['dag_run_id']}/tasks/evaluate/plugin/dood-container")
    result = page.frame_locator("iframe").locator("#result")
    result.wait_for(timeout=30_000)
    text = result.inner_text()
    assert '"model": "𝐱-net café"' in text and "\\ud835" not in text and "\\u00e9" not in text, text
    assert '"note": "abc<U+202E>dcba"' in text and "\u202e" not in text, text

    page.goto(f"{ui_stack.api_url}/dags/{SLEEP}/plugin/dood-metrics")
    note = page.frame_locator("iframe").locator("#not-pipeline")
    note.wait_for(timeout=30_000)
    assert note.inner_text().startswith("No model metrics for this DAG"), note.inner_text()
    page.context.close()
