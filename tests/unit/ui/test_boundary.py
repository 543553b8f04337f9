"""The api-server's side of dood imports only what serves pages: never the operators, sensors, triggers or
aiodocker (issue 22.2). Checked in a fresh interpreter, as `test_policy.py` does for the policy: the plugin's
UI entry (`dood.plugin.DoodPlugin`'s apps and views), the routes, the extra link Airflow registers from the
provider info, and what a request loads lazily (the config, results, logs), with the DooD page served once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("dood.operators", "dood.triggers", "dood.sensors", "dood.dag_factory", "aiodocker")

SERVE_THE_UI = r"""
import json, sys

import dood.ui.routes
from dood.plugin import DoodPlugin

apps, views = DoodPlugin.fastapi_apps, DoodPlugin.external_views  # what Airflow's plugins manager reads
assert apps and views

import dood.ui.extra_link  # registered as an extra link by dood.get_provider_info
from dood.get_provider_info import get_provider_info

get_provider_info()

# What a request imports lazily: the config, the result file, the log filter.
from dood.config.model import load_config
from dood.lifecycle.results import read_result
from dood.lifecycle.logs import inert

load_config()

# The DooD page, served once (a fake engine: the import boundary is the question, not Docker).
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from dood.ui import access, routes
from dood.ui.reader import EngineReader
from dood.ui.every_host import Engines


class Api:
    def containers(self, **kwargs):
        return []

    def info(self):
        return {"Name": "host"}


class Manager:
    def is_authorized_dag(self, **kwargs):
        return True


routes.engines = lambda: Engines({"": EngineReader(Api())})
access._auth_manager = lambda: Manager()
app = apps[0]["app"]
app.dependency_overrides[get_user] = lambda: object()
page = TestClient(app).get("/containers")
assert page.status_code == 200, page.text

loaded = sorted(name for name in sys.modules if name.startswith(("dood", "aiodocker")))
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def loaded() -> list[str]:
    run = subprocess.run([sys.executable, "-c", SERVE_THE_UI], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"serving the UI in a fresh interpreter failed:\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_ui_loads_no_operator_sensor_trigger_or_aiodocker(loaded):
    bad = [name for name in loaded if name.split(".")[0] == "aiodocker" or name.startswith(FORBIDDEN)]
    assert not bad, f"the api-server's side of dood imports {bad}; see what imports them with python -X importtime"


def test_the_pipeline_prefix_is_the_dag_factorys():
    """`dood.ui.metrics` reads pipeline DAG ids with `dood.naming.DAG_ID_PREFIX`; the factory names them."""
    from dood import dag_factory, naming
    from dood.ui.metrics import pipeline_name

    assert dag_factory.DAG_ID_PREFIX == naming.DAG_ID_PREFIX
    assert pipeline_name(f"{dag_factory.DAG_ID_PREFIX}breast_cancer") == "breast_cancer"
    assert pipeline_name("janitor") is None


def test_the_page_reads_the_janitors_marker_for_a_missing_task_instance():
    from dood import janitor
    from dood.ui import task_states

    assert task_states.MISSING == janitor.MISSING
