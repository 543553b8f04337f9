"""The example's asset chain around a pipeline (an Airflow DAG file: the safe-mode parser looks for "airflow"
and "dag"): data -> pipeline -> model -> deploy.

For each pipeline of the dood config that declares `inputs` and a `model_asset` and runs the example image
(`dood-ml-example`, images/ml-example), two DAGs:

- `dood_<name>_ingest` lands a new data partition, `<data_root>/<name>/<date>/part.csv` (the date's sample of the
  example's data set, written by a container of the example image in a directory made for it), and emits the
  pipeline's first input asset with extra {dataset_date, partition, rows}. The pipeline's run then trains on
  that date (`dataset_date`). An outside system does the same through Airflow's REST API:
  `POST /api/v2/assets/events {"asset_id": <id>, "extra": {"dataset_date": "2026-11-02"}}`.
- `dood_<name>_deploy`, scheduled on the model asset, prints what it would deploy: the model's host path and
  digest, its metrics and the run that crowned it, read from the event's extra (promote emits it only when it
  crowns a model). A run the model's event triggered deploys that event's model; any other run (started by
  hand, or `airflow dags test` as `make demo` does) deploys the current champion: the asset's newest event, read
  through the task's `inlet_events`. Its log line says which. With no model event at all it fails, saying so.

`make demo` (scripts/demo.sh) runs the chain without a scheduler: ingest, the pipeline, then deploy, each with
`airflow dags test` for the demo's date; the events land in Airflow's metadata DB all the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, Param, task

from dood import DoodContainerOperator
from dood.config import load_config
from dood.naming import DAG_ID_PREFIX
from dood.operators.assets import DATASET_DATE_KEY, airflow_asset

EXAMPLE_IMAGE = "dood-ml-example"
LANDING = "/dood/landing"
#: The date's sample of the example's data set (what prepare.py samples too), as CSV in the new partition.
LAND = """
import json, os
import numpy as np
from sklearn.datasets import load_breast_cancer
day = os.environ["DOOD_DATASET_DATE"]
data = load_breast_cancer()
rng = np.random.default_rng(int(day.replace("-", "")))
rows = np.sort(rng.choice(len(data.target), size=int(round(len(data.target) * 0.8)), replace=False))
path = os.path.join(os.environ["DOOD_LANDING_DIR"], "part.csv")
np.savetxt(path, np.column_stack([data.data[rows], data.target[rows]]), delimiter=",", fmt="%.10g",
           header=",".join([*data.feature_names, "target"]), comments="")
print(f"[ingest] landed {len(rows)} rows of {day} in {path}", flush=True)
with open(os.environ["DOOD_RESULT_FILE"], "w") as f:
    json.dump({"dataset_date": day, "rows": int(len(rows)), "file": "part.csv"}, f)
"""


class LandPartition(DoodContainerOperator):
    """Runs the landing container with the day's partition directory, made for its user, then gives the data
    asset's event its extra: the date, the partition's host path and the rows landed."""

    def __init__(self, *, data_root: str, pipeline_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_root = data_root
        self.pipeline_name = pipeline_name

    def execute(self, context: Any) -> Any:
        logical = context.get("logical_date")
        day = context["params"].get("dataset_date") or (logical or dt.datetime.now(dt.timezone.utc)).date().isoformat()
        self._partition = f"{self.data_root.rstrip('/')}/{self.pipeline_name}/{day}"
        self.mounts = [*self.mounts, {"source": self._partition, "target": LANDING}]
        self.environment = {**self.environment, "DOOD_DATASET_DATE": day, "DOOD_LANDING_DIR": LANDING}
        result = super().execute(context)
        extra = {DATASET_DATE_KEY: day, "partition": self._host_partition, "rows": (result or {}).get("rows")}
        for asset in self.outlets:
            context["outlet_events"][asset].extra = extra
        self.log.info("Data asset event: %s", extra)
        return result

    def build_spec(self, config, hook, identity, context):
        self._host_partition = hook.mount_map.to_host(self._partition, f"{self.task_id}: partition")
        return super().build_spec(config, hook, identity, context)

    def prepare_directories(self, directories, user):
        what = f"{self.task_id}: pipeline {self.pipeline_name}"
        directories.for_input(self.data_root, what=f"{what}: data_root")
        directories.for_input(f"{self.data_root.rstrip('/')}/{self.pipeline_name}", what=f"{what}: its data")
        directories.for_container(self._partition, user, what=f"{what}: new partition")


def ingest_dag(name: str, pipeline: Any) -> DAG:
    prepare = pipeline.steps["prepare"]
    with DAG(
        f"{DAG_ID_PREFIX}{name}_ingest",
        description=f"Lands a data partition for pipeline {name} and emits its data asset",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        params={
            "dataset_date": Param(
                None,
                type=["null", "string"],
                format="date",
                title="dataset date",
                description="Date of the partition to land; empty means today (UTC).",
            )
        },
        tags=["dood", "ml", name, "assets"],
    ) as dag:
        LandPartition(
            task_id="land",
            image=f"{prepare.image}:{pipeline.image_tag}",
            command=["python", "-c", LAND],
            data_root=pipeline.data_root,
            pipeline_name=name,
            resources={"cpus": 1, "memory": "512m"},
            outlets=[airflow_asset(pipeline.inputs[0])],
            retries=0,
        )
    return dag


def deploy_dag(name: str, pipeline: Any) -> DAG:
    model = airflow_asset(pipeline.model_asset)

    with DAG(
        f"{DAG_ID_PREFIX}{name}_deploy",
        description=f"Prints what it would deploy when pipeline {name} crowns a model",
        schedule=[model],
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        catchup=False,
        tags=["dood", "ml", name, "assets"],
    ) as dag:

        @task(task_id="deploy", inlets=[model])
        def deploy(**context: Any) -> dict[str, Any]:
            triggering = context["triggering_asset_events"].get(model) or []
            if triggering:  # promote's event started this run: deploy that model
                event, source, events = triggering[-1], "triggering", len(triggering)
                which = f"triggered by the event of run {event.source_run_id}"
            else:  # started by hand or `dags test`: the current champion, the asset's newest event
                newest = context["inlet_events"][model]
                if not len(newest):
                    raise ValueError(
                        f"the model asset {model.name!r} has no event: nothing to deploy. Pipeline {name}'s promote "
                        "emits one when it crowns a model; this DAG then runs on it"
                    )
                event, source, events = newest[-1], "newest", 1
                which = f"the newest model event, of run {event.source_run_id} (no model event triggered this run)"
            extra = dict(event.extra or {})
            print(
                f"would deploy {extra.get('model_path')} ({extra.get('model_digest')}), crowned by "
                f"{extra.get('dag_id')} run {extra.get('run_id')} ({extra.get('reason')}): "
                f"metrics {extra.get('metrics')}; {which}"
            )
            return {"events": events, "source": source, "event_id": getattr(event, "id", None), **extra}

        deploy()
    return dag


def build() -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    for name, pipeline in load_config(view=False).pipelines.items():
        if pipeline.inputs and pipeline.model_asset and pipeline.steps["prepare"].image == EXAMPLE_IMAGE:
            for dag in (ingest_dag(name, pipeline), deploy_dag(name, pipeline)):
                dags[dag.dag_id] = dag
    return dags


globals().update(build())
