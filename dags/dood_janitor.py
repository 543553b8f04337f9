"""Airflow maintenance DAG: remove dood containers whose task instance has ended (orphans of crashed
workers) and ended ones older than the TTL. Never touches containers without the dood.managed label."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param, task

from dood.config.model import load_config
from dood.config.placement import place

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
    def sweep_orphans(params=None, host: str | None = None) -> list[str]:
        from dood.exceptions import DoodConfigError
        from dood.hooks.dood import DoodHook
        from dood.janitor import sweep, task_sdk_states

        config = load_config()
        if host is not None and config.host != host:
            raise DoodConfigError(
                f"the janitor of host {host!r} ran on host {config.host!r} ($DOOD_HOST): not sweeping"
            )
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
            runs_root=config.runs_root,  # stop notes: the DooD page shows "stopping" (who, until when)
        )
        return [f"{v.name}: {v.reason}" for v in verdicts]

    sweep_orphans()  # the default queue: the top-level docker (or the host of the worker that takes it)
    # Several Docker hosts (docs/hosts.md): one sweep per host, on its queue, so each host's worker sweeps its own
    # engine through its own proxy.
    hosts = load_config(view=False).hosts
    for name in hosts:
        sweep_orphans.override(task_id=f"sweep_orphans_{name.replace('.', '_')}", queue=place(hosts, host=name).queue)(
            host=name
        )
