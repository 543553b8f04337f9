"""Per-team access in the compose stack (issue 21.4), in a real browser: the FAB auth manager
(AIRFLOW_AUTH_MANAGER, the image of scripts/build-fab-image.sh) and a role per team made by
scripts/compose-team.sh, as docs/compose.md shows.

Team A (`alice`) owns `dood_breast_cancer`, team B (`bob`) owns `dood_janitor`. Each signs in through FAB's
login form and sees, in Airflow's DAG list, on the DooD page and in the Model metrics tab, its own team's DAG
and containers only; the other team's DAG, containers and metrics are refused. The containers are this stack's
dood containers (the labels dood-proxy stamps), one per team, made on the engine directly.

Runs under `flock /tmp/dood-compose.lock` (DOOD_E2E=1 or -m e2e), in project `dood-teams`.
"""

from __future__ import annotations

import os
import secrets

import docker
import pytest

from tests.e2e.conftest import log, run_script, wait_for
from tests.e2e.team_stack import ADMIN, PROJECT, TeamStack

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
FAB_IMAGE = "dood-airflow:3.3.2-fab"
CHROMIUM = "/usr/bin/chromium"
BUSYBOX = "dood-test-busybox:latest"
TEAMS = {  # user -> (role, the team's DAG)
    "alice": ("team_a", "dood_breast_cancer"),
    "bob": ("team_b", "dood_janitor"),
}


@pytest.fixture(scope="module")
def stack(request):
    team = TeamStack.set_up(AIRFLOW_IMAGE=FAB_IMAGE, AIRFLOW_AUTH_MANAGER=FAB)
    client = docker.from_env()
    try:
        run_script("build-fab-image.sh")  # on the image compose-setup.sh just (re)built
        team.up()
        admin = team.token(ADMIN, team.password)
        assert admin.status_code in (200, 201), f"the admin's FAB login: {admin.status_code} {admin.text[:300]}"
        team.admin_token = admin.json()["access_token"]
        for _, dag_id in TEAMS.values():
            wait_for(
                f"{dag_id} parsed",
                lambda dag_id=dag_id: team.api(team.admin_token, "GET", f"/api/v2/dags/{dag_id}").ok,
                timeout=180,
            )
        compose = f"docker-compose -p {PROJECT} -f docker-compose.yml --env-file {team.env_file}"
        team.passwords = {}
        for user, (role, dag_id) in TEAMS.items():
            run_script("compose-team.sh", role, dag_id, env={"COMPOSE": compose})
            team.passwords[user] = secrets.token_urlsafe(12)
            team.exec(
                "airflow-apiserver",
                *("airflow", "users", "create", "-r", role, "-u", user, "-p", team.passwords[user]),
                *("-f", user, "-l", "Team", "-e", f"{user}@example.org"),
            )
        # One running dood container per team's DAG, with the labels dood-proxy stamps on this stack's steps.
        team.containers = {}
        for user, (_, dag_id) in TEAMS.items():
            made = client.containers.run(
                BUSYBOX,
                ["sleep", "600"],
                detach=True,
                name=f"dood-teams-{user}-{os.getpid()}",
                labels={
                    "dood.managed": "true",
                    "dood.stack": PROJECT,
                    "dood.dag_id": dag_id,
                    "dood.task_id": "train",
                    "dood.run_id": f"manual__{user}",
                    "dood.map_index": "-1",
                    "dood.try_number": "1",
                },
            )
            team.containers[user] = made.id[:12]
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


def fab_sign_in(browser, stack: TeamStack, user: str):
    """Through FAB's own login form, as a person does."""
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.goto(f"{stack.api_url}/", wait_until="domcontentloaded")
    page.wait_for_selector("input[name=username]", timeout=60_000)
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", stack.passwords[user])
    page.press("input[name=password]", "Enter")
    page.wait_for_url(lambda url: "/auth/" not in url and "login" not in url, timeout=60_000)
    return page


@pytest.mark.parametrize("user", sorted(TEAMS))
def test_a_team_sees_its_own_dags_containers_and_metrics_only(stack, browser, user):
    (other,) = set(TEAMS) - {user}
    _, own_dag = TEAMS[user]
    _, other_dag = TEAMS[other]
    page = fab_sign_in(browser, stack, user)

    # Airflow's DAG list: the team's DAG, not the other's.
    page.goto(f"{stack.api_url}/dags", wait_until="domcontentloaded")
    page.get_by_text(own_dag).first.wait_for(timeout=60_000)
    page.screenshot(path=str(stack.root / f"dags-{user}.png"), full_page=True)
    assert page.get_by_text(other_dag).count() == 0, f"{user} sees {other_dag} in the DAG list"
    opened = page.goto(f"{stack.api_url}/api/v2/dags/{other_dag}")
    assert opened.status == 403, f"{user} reads {other_dag} through the API: {opened.status}"

    # The DooD page (what the plugin's iframe shows): the team's container only (rows carry the short id).
    page.goto(f"{stack.api_url}/dood/containers", wait_until="domcontentloaded")
    page.locator(f"tr[data-container='{stack.containers[user]}']").wait_for(timeout=30_000)
    page.screenshot(path=str(stack.root / f"dood-{user}.png"), full_page=True)
    html = page.content()
    assert stack.containers[other] not in html and other_dag not in html, f"{user} sees {other}'s container"
    listed = page.request.get(f"{stack.api_url}/dood/api/containers").json()["containers"]
    assert {c["dag_id"] for c in listed} == {own_dag}, f"{user}: /dood/api/containers lists {listed}"

    # Model metrics: the team's DAG answers, the other's is refused.
    own = page.goto(f"{stack.api_url}/dood/dags/{own_dag}/metrics")
    assert own.status == 200, f"{user}: metrics of {own_dag}: {own.status}"
    refused = page.goto(f"{stack.api_url}/dood/dags/{other_dag}/metrics")
    assert refused.status == 403, f"{user}: metrics of {other_dag}: {refused.status} {page.inner_text('body')[:300]}"
    log(f"{user}: sees {own_dag} and {stack.containers[user]}; {other_dag} refused (DAG list, API, DooD, metrics)")
    page.context.close()


def test_the_admin_still_sees_every_team(stack, browser):
    dags = {d["dag_id"] for d in stack.api(stack.admin_token, "GET", "/api/v2/dags").json()["dags"]}
    assert {dag for _, dag in TEAMS.values()} <= dags, dags
