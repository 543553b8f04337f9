"""Airflow's Assets view in a real browser shows a pipeline's lineage: data -> pipeline -> model -> deploy.

The stack of tests/ui (login on, headless Chromium) is given a pipeline with assets and the example's asset DAGs
(dags/dood_example_assets.py); nothing runs: the lineage comes from the parsed DAGs. Screenshot:
var/ui-screenshots/assets-lineage.png.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests.ui.conftest import screenshot, signed_in_page, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
NAME = "ui_assets"  # dood_ui_*: the stack removes their containers (none run here)
DAG_ID, INGEST, DEPLOY = f"dood_{NAME}", f"dood_{NAME}_ingest", f"dood_{NAME}_deploy"
DATA, MODEL = f"{NAME}_data", f"{NAME}_model"


@pytest.fixture(scope="module")
def lineage(ui_stack):
    """The pipeline appended to the stack's config, the example's asset DAGs copied in, all parsed."""
    home = ui_stack.home
    root = home / NAME
    steps = "".join(
        f"      {s}: {{image: dood-ml-example, command: [python, /opt/app/{s}.py]}}\n"
        for s in ("prepare", "train", "evaluate", "promote")
    )
    with open(home / "dood.yaml", "a") as config:  # `pipelines:` is the file's last section
        config.write(
            f"""  {NAME}:
    schedule: {{assets: {DATA}}}
    data_root: {root}/data
    model_root: {root}/models
    artifact_root: {root}/artifacts
    inputs: [{{uri: "file://{root}/data", name: {DATA}}}]
    model_asset: {{uri: "file://{root}/models/champion", name: {MODEL}}}
    steps:
{steps}"""
        )
    shutil.copy(REPO / "dags" / "dood_example_assets.py", home / "dags" / "dood_example_assets.py")
    for dag_id in (DAG_ID, INGEST, DEPLOY):
        ui_stack.wait_parsed(dag_id)
    assets = {a["name"]: a["id"] for a in ui_stack.api("GET", "/assets", params={"limit": 100})["assets"]}
    return assets


def test_the_assets_view_shows_data_pipeline_model_deploy(ui_stack, browser, lineage):
    answer = requests.get(  # what the asset page draws (Airflow's UI API, not under /api/v2)
        f"{ui_stack.api_url}/ui/dependencies",
        params={"node_id": f"asset:{lineage[MODEL]}"},
        headers={"Authorization": f"Bearer {ui_stack.token}"},
        timeout=30,
    )
    assert answer.ok, answer.text
    graph = answer.json()
    edges = {(e["source_id"], e["target_id"]) for e in graph["edges"]}
    chain = [f"dag:{INGEST}", f"asset:{lineage[DATA]}", f"dag:{DAG_ID}", f"asset:{lineage[MODEL]}", f"dag:{DEPLOY}"]
    assert set(zip(chain, chain[1:], strict=False)) <= edges, edges

    page = signed_in_page(browser, ui_stack, "admin")
    page.goto(f"{ui_stack.api_url}/assets/{lineage[MODEL]}")
    shown = (INGEST, DATA, DAG_ID, MODEL, DEPLOY)
    wait_until(
        lambda: all(page.get_by_text(name, exact=True).count() for name in shown),
        60,
        f"the model asset's page to draw {shown}",
    )
    screenshot(page, "assets-lineage")
    page.context.close()
