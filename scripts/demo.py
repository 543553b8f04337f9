"""The Python half of scripts/demo.sh: the demo's own config, its MLflow server, the on-purpose kill of one
training, and the checks at the end. Run from the venv: `python scripts/demo.py <command> ...`.

- `config BASE OUT --pipeline P`: OUT is BASE (the dood config in force: $DOOD_CONFIG or config/dood.yaml, never
  edited) with the demo's changes: tracking to the demo's MLflow server, at a free port of the gateway of the
  steps' Docker network (BASE's `defaults.network`, else `bridge`: the steps' containers reach it there, the host
  too); the train step waits $DOOD_EPOCH_SECONDS after each epoch (time to kill it between two) and retries 1 s
  after a failure. Prints `chain <url>` when the pipeline has an asset chain (dags/dood_example_assets.py makes
  its ingest and deploy DAGs: `inputs`, `model_asset`, the example image), else `alone <url>`.
- `mlflow-start DIR --url URL`: `mlflow server` from the venv on URL's host and port, its store DIR/mlflow.db
  (SQLite), the artifacts it serves in DIR/artifacts; returns once /health answers. Its own session, its pid in
  DIR/server.pid: demo.sh stops that process group.
- `kill DAG_ID --task train --epoch K --record FILE`: waits for the first try's container of the task (found by
  its dood labels), follows its output to the line "epoch K/N", and `docker kill`s it; FILE says what it saw.
- `check LOG --tracking-uri URI --pipeline P --record FILE`: from the Airflow log and the MLflow store: the
  retry resumed where the killed try stopped (no epoch lost), the checkpoint is gone after success, and the
  store holds one parent run per DAG run with the step runs nested (one run per step: the retry continued
  train's). Exits non-zero saying what is wrong.
- `unpause DAG_ID...`: the asset chain's consumers (the pipeline, its deploy DAG) unpaused in the demo's
  metadata DB, so that Airflow queues the runs their assets' events call for (it queues none for a paused DAG).
  The dags folder is written to the DB first when one of them is not there yet (a fresh DB), as `airflow dags
  reserialize` does. No scheduler runs: the queued runs stay queued.
- `chain P --date D --ingest-log L --pipeline-log L --deploy-log L`: the asset chain data -> pipeline -> model
  -> deploy, read from Airflow's metadata DB (events, XComs, task states, the asset-triggered run queue) and
  the runs' logs: the ingest run's data event and its extra, prepare of the pipeline's run read that
  partition, promote's model event (or that it kept the champion), deploy's "would deploy" line naming the
  newest model event, and the runs a scheduler would start. Exits non-zero when a link is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

STEPS = ("prepare", "train", "evaluate", "promote")
EPOCH_LINE = re.compile(rb"epoch (\d+)/(\d+):")


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def fail(message: str) -> None:
    print(f"demo: CHECK FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


# --- config ---


def write_config(args: argparse.Namespace) -> None:
    data = yaml.safe_load(Path(args.base).read_text(encoding="utf-8")) or {}
    pipelines = data.get("pipelines") or {}
    if args.pipeline not in pipelines:
        sys.exit(f"demo: the dood config {args.base} has no pipeline {args.pipeline!r} (PIPELINE=...)")
    address = gateway_of((data.get("defaults") or {}).get("network") or "bridge")  # where the steps run
    with socket.socket() as probe:
        probe.bind((address, 0))
        url = f"http://{address}:{probe.getsockname()[1]}"
    data["tracking"] = {"mlflow": {"tracking_uri": url}}
    train = pipelines[args.pipeline].setdefault("steps", {}).get("train")
    if train is not None:
        train.setdefault("environment", {})["DOOD_EPOCH_SECONDS"] = str(args.epoch_seconds)
        train["retry_delay_seconds"] = 1
        if not train.get("retries") and not pipelines[args.pipeline].get("retries"):
            train["retries"] = 1  # the kill must leave a retry
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by scripts/demo.sh from {args.base} (edit that one): tracking and the train step's pace.\n"
    out.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    # the condition under which dags/dood_example_assets.py makes the pipeline's ingest and deploy DAGs
    pipeline = pipelines[args.pipeline]
    prepare = (pipeline.get("steps") or {}).get("prepare") or {}
    with_chain = pipeline.get("inputs") and pipeline.get("model_asset") and prepare.get("image") == "dood-ml-example"
    print("chain" if with_chain else "alone", url)


# --- the MLflow server ---


def gateway_of(network: str) -> str:
    import docker

    api = docker.from_env().api
    for config in api.inspect_network(network)["IPAM"]["Config"] or []:
        if config.get("Gateway") and ":" not in config["Gateway"]:
            return str(config["Gateway"])
    sys.exit(f"demo: the Docker network {network!r} has no IPv4 gateway for the steps to reach MLflow on")


def start_mlflow(args: argparse.Namespace) -> None:
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    url = args.url.rstrip("/")
    address, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", *store_args(root), "--host", address, "--port", str(port), "--workers", "1"]
    log = root / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(  # noqa: S603 - the venv's own mlflow, arguments built here
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=root,
            # no job runner (8 more processes, for GenAI scoring and trace archival): starts faster, idles lighter
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    (root / "server.pid").write_text(f"{server.pid}\n")  # demo.sh stops its process group, even if interrupted now
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310 - the server just started
                if answer.read().strip() == b"OK":
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
            tail = log.read_text(errors="replace")[-3000:]
            sys.exit(f"demo: the MLflow server at {url} did not answer /health within {args.timeout}s:\n{tail}")
        time.sleep(0.2)


def store_args(root: Path) -> list[str]:
    """The local store: runs in a SQLite file, artifacts served by the server from a directory."""
    return [
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]


# --- the kill ---


def kill_at_epoch(args: argparse.Namespace) -> None:
    import docker

    api = docker.from_env().api
    labels = ["dood.managed=true", f"dood.dag_id={args.dag_id}", f"dood.task_id={args.task}", "dood.try_number=1"]
    since = time.time() - 5
    deadline = time.monotonic() + args.timeout
    container = None
    while container is None:
        found = [c for c in api.containers(filters={"label": labels}) if c["Created"] >= since]
        if found:
            container = found[0]
        elif time.monotonic() > deadline:
            say(f"no {args.task} container appeared within {args.timeout}s: nothing killed")
            return
        else:
            time.sleep(0.1)
    name = container["Names"][0].lstrip("/")
    record = {"container": name, "run_id": container["Labels"].get("dood.run_id"), "killed": False}
    buffered = b""
    last = 0
    for chunk in api.logs(container["Id"], stream=True, follow=True):
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            found_epoch = EPOCH_LINE.search(line)
            if not found_epoch:
                continue
            last, total = int(found_epoch.group(1)), int(found_epoch.group(2))
            if total <= args.epoch:
                say(f"{name} trains {total} epochs only: not killing it at epoch {args.epoch}")
                Path(args.record).write_text(json.dumps({**record, "epochs": total}))
                return
            if last >= args.epoch and not record["killed"]:
                api.kill(container["Id"], signal="SIGKILL")
                record.update(killed=True, epoch=last, epochs=total)
                say(
                    f"killed {name} (SIGKILL) after its line 'epoch {last}/{total}', on purpose: "
                    "Airflow retries it, and the retry resumes from the checkpoint"
                )
    record["last_logged_epoch"] = last
    Path(args.record).write_text(json.dumps(record))


# --- the checks ---


def check(args: argparse.Namespace) -> None:
    log = Path(args.log).read_text(errors="replace")
    finished = re.search(r"DagRun Finished: dag_id=(\S+?), .*?run_id=(\S+?), ", log)
    if not finished:
        fail(f"{args.log} says no DagRun Finished")
    dag_id, run_id = finished.group(1), finished.group(2)
    record = json.loads(Path(args.record).read_text()) if Path(args.record).exists() else {}
    resumed = [int(n) for n in re.findall(r"\[train\] resumed from epoch (\d+)", log)]

    if record.get("killed"):
        killed_at = record["last_logged_epoch"]
        if not resumed:
            fail(f"train was killed at epoch {killed_at}, but no try says 'resumed from epoch' (see {args.log})")
        if resumed[-1] < killed_at:
            fail(f"train was killed after epoch {killed_at} but its retry resumed from epoch {resumed[-1]}")
        trained = sorted({int(n) for n in re.findall(r"\[train\] epoch (\d+)/\d+:", log)})
        if trained != list(range(1, record["epochs"] + 1)):
            fail(f"the tries of train logged epochs {trained}, not each of 1..{record['epochs']} once")
        say(
            f"train's try 1 was killed after epoch {killed_at}; try 2 resumed from epoch {resumed[-1]} and "
            f"trained epochs {resumed[-1] + 1}..{record['epochs']} only"
        )
    elif record:
        say("train was not killed (see above): no resume to show")
    removed = re.findall(r"Checkpoint removed: (/\S+)", log)
    for path in removed:
        if Path(path).exists():
            fail(f"the checkpoint directory {path} is still there after train succeeded")
    if removed:
        say(f"train's checkpoint directory is gone after its success ({removed[-1]})")

    check_hierarchy(args.tracking_uri, args.experiment, dag_id, run_id, killed=bool(record.get("killed")))


def check_hierarchy(uri: str, experiment_name: str, dag_id: str, run_id: str, *, killed: bool) -> None:
    """One parent run per DAG run (in the whole store), every step run nested under its own DAG run's parent,
    one run per step of this DAG run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        fail(f"MLflow at {uri} has no experiment {experiment_name!r}")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("dood.kind") == "dag_run"]
    steps = [r for r in runs if r.data.tags.get("dood.kind") == "task"]
    per_dag_run = Counter((r.data.tags.get("dood.dag_id"), r.data.tags.get("dood.run_id")) for r in parents)
    twice = {key: n for key, n in per_dag_run.items() if n > 1}
    if twice:
        fail(f"DAG runs with more than one parent run in MLflow: {twice}")
    parent_of = {(r.data.tags.get("dood.dag_id"), r.data.tags.get("dood.run_id")): r.info.run_id for r in parents}
    for step in steps:
        key = (step.data.tags.get("dood.dag_id"), step.data.tags.get("dood.run_id"))
        if step.data.tags.get("mlflow.parentRunId") != parent_of.get(key):
            fail(f"step run {step.info.run_id} ({step.data.tags.get('dood.task_id')}) is not nested under {key}'s")
    if (dag_id, run_id) not in parent_of:
        fail(f"no parent run for {dag_id} {run_id} in experiment {experiment_name!r}")
    mine = [s for s in steps if (s.data.tags.get("dood.dag_id"), s.data.tags.get("dood.run_id")) == (dag_id, run_id)]
    per_task = Counter(s.data.tags.get("dood.task_id") for s in mine)
    if sorted(per_task) != sorted(STEPS) or set(per_task.values()) != {1}:
        fail(f"this DAG run's step runs are {dict(per_task)}, not one for each of {STEPS}")
    train = next(s for s in mine if s.data.tags.get("dood.task_id") == "train")
    tries = train.data.tags.get("dood.try_number")
    if killed and tries != "2":
        fail(f"train's run says try {tries}: the retry did not continue it")
    parent = parent_of[(dag_id, run_id)]
    say(
        f"MLflow: experiment {experiment_name!r} holds {len(parents)} DAG run(s), one parent run each; this one's "
        f"({parent}) has {', '.join(STEPS)} nested" + (" (train's one run continued by its retry)" if killed else "")
    )
    print(f"experiment_id={experiment.experiment_id}")


# --- the asset chain ---

FINISHED = re.compile(r"DagRun Finished: dag_id=(\S+?), .*?run_id=(\S+?), .*?state=(\w+)")


def finished_run(log_path: str) -> tuple[str, str]:
    """The (dag_id, run_id) that `airflow dags test`'s log says finished."""
    found = FINISHED.findall(Path(log_path).read_text(errors="replace"))
    if not found:
        fail(f"{log_path} says no DagRun Finished")
    dag_id, run_id, _state = found[-1]
    return dag_id, run_id


def sync_dags_folder() -> None:
    """What `airflow dags reserialize` does: every DAG of the configured bundles (the dags folder) into the DB."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def unpause(args: argparse.Namespace) -> None:
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        missing = [dag_id for dag_id in args.dag_ids if session.get(DagModel, dag_id) is None]
    if missing:
        sync_dags_folder()
    with create_session() as session:
        for dag_id in args.dag_ids:
            model = session.get(DagModel, dag_id)
            if model is None:
                fail(f"the DAG {dag_id} is not in the dags folder (its import error: airflow dags list-import-errors)")
            model.is_paused = False


def chain(args: argparse.Namespace) -> None:
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel, DagScheduleAssetReference
    from airflow.models.dag import DagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    config = yaml.safe_load(Path(os.environ["DOOD_CONFIG"]).read_text(encoding="utf-8"))
    pipeline = config["pipelines"][args.pipeline]
    data_ref, model_ref = pipeline["inputs"][0], pipeline["model_asset"]
    ingest_dag, ingest_run = finished_run(args.ingest_log)
    dag_id, run_id = finished_run(args.pipeline_log)
    deploy_dag, deploy_run = finished_run(args.deploy_log)

    with create_session() as session:

        def asset(ref: dict[str, str]) -> AssetModel:
            name = ref.get("name") or ref["uri"]  # Airflow's default name is the URI
            found = session.scalar(select(AssetModel).where(AssetModel.name == name))
            if found is None:
                fail(f"Airflow's DB has no asset {name!r}")
            return found

        def events(of: AssetModel, **where: str) -> list[AssetEvent]:
            query = select(AssetEvent).where(AssetEvent.asset_id == of.id).order_by(AssetEvent.id)
            for column, value in where.items():
                query = query.where(getattr(AssetEvent, column) == value)
            return list(session.scalars(query))

        def xcom(dag: str, run: str, task: str) -> Any:
            row = session.scalar(
                select(XComModel).where(
                    XComModel.dag_id == dag,
                    XComModel.run_id == run,
                    XComModel.task_id == task,
                    XComModel.key == "return_value",
                )
            )
            return XComModel.deserialize_value(row) if row is not None else None

        data, model = asset(data_ref), asset(model_ref)

        # data: the ingest run's event
        landed = events(data, source_dag_id=ingest_dag, source_run_id=ingest_run)
        if not landed:
            fail(f"{ingest_dag} run {ingest_run} emitted no event of {data.name} (see {args.ingest_log})")
        data_event = landed[-1]
        extra = dict(data_event.extra or {})
        part = f"{args.pipeline}/{args.date}"
        if extra.get("dataset_date") != args.date or not str(extra.get("partition", "")).endswith("/" + part):
            fail(f"the data event {data_event.id}'s extra {extra} does not name {args.date}'s partition {part}")
        print(f"data    : {data.name} event {data_event.id} by {ingest_dag} run {ingest_run}, extra {extra}")

        # pipeline: prepare read that partition
        read = xcom(dag_id, run_id, "prepare") or {}
        if read.get("partition") != f"{part}/part.csv" or read.get("rows") != extra.get("rows"):
            fail(
                f"prepare of {dag_id} run {run_id} did not read the landed partition {extra.get('partition')}: its "
                f"result says partition {read.get('partition')!r}, {read.get('rows')} rows"
            )
        said = re.findall(
            r"\[prepare\] (read the landed partition \S+ \(\d+ rows\))", Path(args.pipeline_log).read_text()
        )
        if not said:
            fail(f"prepare's log in {args.pipeline_log} does not say 'read the landed partition'")
        print(f"pipeline: {dag_id} run {run_id}: prepare {said[-1].strip()} = {extra['partition']}/part.csv")

        # model: promote's event, or none when it kept the champion
        crowned = events(model, source_dag_id=dag_id, source_run_id=run_id)
        promote = session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == "promote"
            )
        )
        if crowned:
            m = dict(crowned[-1].extra or {})
            print(
                f"model   : {model.name} event {crowned[-1].id}: {m.get('model_path')} ({m.get('model_digest')}), "
                f"metrics {m.get('metrics')}, crowned by run {m.get('run_id')} ({m.get('reason')})"
            )
        elif str(promote) == "skipped":
            print(f"model   : promote kept the champion: no {model.name} event")
        else:
            fail(f"promote of {dag_id} run {run_id} is {promote} and emitted no {model.name} event")

        # deploy: the newest model event
        newest = events(model)
        deploy_said = Path(args.deploy_log).read_text(errors="replace")
        line = re.findall(r"(would deploy .*?)(?: +\[[a-z._]+\].*)?$", deploy_said, re.M)
        deployed = xcom(deploy_dag, deploy_run, "deploy") or {}
        if not newest and "has no event: nothing to deploy" in deploy_said:
            print(
                f"deploy  : {deploy_dag} run {deploy_run} had nothing to deploy: {model.name} has no event in this DB "
                "(a champion crowned before the pipeline had a model_asset, or under another Airflow DB, has none); "
                "DEMO_CONF='{\"force_promote\": true}' make demo crowns one"
            )
        elif not line:
            fail(f"{deploy_dag} run {deploy_run} printed no 'would deploy' line (see {args.deploy_log})")
        elif not newest or deployed.get("event_id") != newest[-1].id:
            newest_id = newest[-1].id if newest else None
            fail(f"deploy deployed event {deployed.get('event_id')}, not the newest of {model.name} ({newest_id})")
        else:
            print(f"deploy  : {deploy_dag} run {deploy_run}: {line[-1].strip()}")

        # what a scheduler would do with those events
        queued = session.execute(
            select(AssetDagRunQueue.target_dag_id, AssetModel.name, AssetDagRunQueue.created_at)
            .join(AssetModel, AssetModel.id == AssetDagRunQueue.asset_id)
            .where(AssetModel.id.in_([data.id, model.id]))
            .order_by(AssetDagRunQueue.created_at)
        ).all()
        paused = session.execute(
            select(DagScheduleAssetReference.dag_id, AssetModel.name)
            .join(AssetModel, AssetModel.id == DagScheduleAssetReference.asset_id)
            .join(DagModel, DagModel.dag_id == DagScheduleAssetReference.dag_id)
            .where(AssetModel.id.in_([data.id, model.id]), DagModel.is_paused.is_(True))
        ).all()
    if dag_id not in {target for target, _, _ in queued}:
        fail(f"Airflow queued no asset-triggered run of {dag_id} for the {data.name} event")
    runs = " and ".join(f"{target} (on {name}, queued since {at:%H:%M:%S} UTC)" for target, name, at in queued)
    print(f"queued  : a scheduler would now start {runs}: asset_dag_run_queue (no scheduler runs in the demo)")
    for target, name in paused:
        print(f"          {target} is scheduled on {name} too, but paused: nothing queued for it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("config")
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--pipeline", required=True)
    p.add_argument("--epoch-seconds", type=float, default=0.5)
    p.set_defaults(run=write_config)
    p = commands.add_parser("mlflow-start")
    p.add_argument("dir")
    p.add_argument("--url", required=True, help="where it listens: the tracking_uri `config` wrote")
    p.add_argument("--timeout", type=float, default=180)
    p.set_defaults(run=start_mlflow)
    p = commands.add_parser("kill")
    p.add_argument("dag_id")
    p.add_argument("--task", default="train")
    p.add_argument("--epoch", type=int, required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--timeout", type=float, default=300)
    p.set_defaults(run=kill_at_epoch)
    p = commands.add_parser("check")
    p.add_argument("log")
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--record", required=True)
    p.set_defaults(run=check)
    p = commands.add_parser("unpause")
    p.add_argument("dag_ids", nargs="+")
    p.set_defaults(run=unpause)
    p = commands.add_parser("chain")
    p.add_argument("pipeline")
    p.add_argument("--date", required=True)
    p.add_argument("--ingest-log", required=True)
    p.add_argument("--pipeline-log", required=True)
    p.add_argument("--deploy-log", required=True)
    p.set_defaults(run=chain)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
