"""Airflow maintenance DAG: remove dood containers whose task instance has ended (orphans of crashed
workers) and ended ones older than the TTL. Never touches containers without the dood.managed label."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="dood_janitor",
    description="Remove orphaned dood containers",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "dry_run": Param(False, type="boolean", description="Only log what would be removed."),
        "ttl_hours": Param(24, type="number", minimum=0, description="Remove ended containers older than this."),
        "only_labels": Param(
            {}, type="object", description='Sweep only containers that also carry these labels, e.g. {"team": "ml"}.'
        ),
    },
    tags=["dood", "maintenance"],
) as dag:

    @task
    def sweep_orphans(params=None) -> list[str]:
        from dood.config import load_config
        from dood.hooks.dood import DoodHook
        from dood.janitor import sweep, task_sdk_states

        config = load_config()
        hook = DoodHook(config)
        verdicts = sweep(
            hook.api,
            task_sdk_states,
            ttl=timedelta(hours=float(params["ttl_hours"])),
            dry_run=bool(params["dry_run"]),
            grace_seconds=config.defaults.stop_grace_period_seconds,
            only_labels={str(k): str(v) for k, v in (params.get("only_labels") or {}).items()},
            stack=hook.stack,
            host=config.host,  # with several Docker hosts: the one this worker is on ($DOOD_HOST)
        )
        return [f"{v.name}: {v.reason}" for v in verdicts]

    sweep_orphans()
