"""MLflow logging of the example steps: only when dood gave the step a run ($MLFLOW_TRACKING_URI is set).

dood's operator made this step's run (nested under the DAG run's) before the container started, and hands it
over as $MLFLOW_RUN_ID: `mlflow.start_run()` resumes it, so a retried try logs into the same run. Without
$MLFLOW_TRACKING_URI every function here does nothing and MLflow is never imported.

The registry (promote): the crowned model becomes a version of $DOOD_MLFLOW_MODEL_NAME with the alias
`champion`; the version that held it keeps the alias `previous`. Only promote.py's own rules decide that
(quality gate, never from older data or a backfill); this module only writes what they decided.
"""

import contextlib
import os

from common import log, read_json, work_dir, write_json

CHAMPION, PREVIOUS = "champion", "previous"
RUN_ID = os.environ.get("MLFLOW_RUN_ID")  # kept: mlflow.start_run() removes it from the environment
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # no git in the image: MLflow's git tags are skipped quietly
os.environ.setdefault("LOGNAME", f"uid-{os.getuid()}")  # mlflow.user, for a uid without a passwd entry (50000)
MODEL_REF = ("model", "mlflow.json")  # in the partition: where train logged the model, for promote


def enabled():
    return bool(os.environ.get("MLFLOW_TRACKING_URI", "").strip())


@contextlib.contextmanager
def step_run():
    """The step's MLflow run for the duration of the block (None without tracking)."""
    if not enabled():
        yield None
        return
    import mlflow

    with mlflow.start_run(run_id=RUN_ID) as run:  # the run dood made for this task instance (every try's)
        log(f"MLflow: logging to run {run.info.run_id} at {os.environ['MLFLOW_TRACKING_URI']}")
        yield run


def log_params(values):
    if enabled():
        import mlflow

        mlflow.log_params({k: ("" if v is None else v) for k, v in values.items()})


def log_metrics(values, step=None):
    """Numbers only (booleans as 0/1); anything else is left to the step's JSON files."""
    if not enabled():
        return
    import mlflow

    numbers = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and v is not None}
    mlflow.log_metrics(numbers, step=step)


def log_dict(values, name):
    if enabled():
        import mlflow

        mlflow.log_dict(values, name)


def log_model(model, X):
    """The model (scikit-learn flavour, with its signature and an input example); its URI is written to the
    partition for promote. Returns the model URI, or None without tracking."""
    if not enabled():
        return None
    import mlflow
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    # skops (the flavour's default format) loads only the types it is told to trust: those of this model,
    # made by this step (a GradientBoostingClassifier's trees), are recorded with it for whoever loads it
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(X, model.predict(X)),
        input_example=X[:5],
        skops_trusted_types=trusted,
    )
    run_id = mlflow.active_run().info.run_id
    write_json(work_dir(*MODEL_REF), {"model_uri": info.model_uri, "run_id": run_id, "model_id": info.model_id})
    log(f"MLflow: logged the model as {info.model_uri} (run {run_id})")
    return info.model_uri


def register_champion(tags):
    """Register the model train logged as a new version and give it the alias `champion`; the version that
    had it keeps `previous`. Returns {name, version, previous} or None (no tracking, or registration off)."""
    if not enabled() or os.environ.get("DOOD_MLFLOW_REGISTER_MODELS", "true") != "true":
        return None
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name = os.environ.get("DOOD_MLFLOW_MODEL_NAME") or os.environ.get("DOOD_PIPELINE") or "model"
    ref_path = work_dir(*MODEL_REF)
    if not os.path.exists(ref_path):
        log(f"MLflow: {ref_path} is missing (train ran without tracking): nothing to register")
        return None
    ref = read_json(ref_path)
    client = MlflowClient()
    try:
        previous = client.get_model_version_by_alias(name, CHAMPION).version
    except MlflowException:
        previous = None  # no registered model yet, or no champion in it
    version = mlflow.register_model(ref["model_uri"], name, tags={k: str(v) for k, v in tags.items()})
    if previous is not None:
        client.set_registered_model_alias(name, PREVIOUS, previous)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    log(f"MLflow: {name} version {version.version} is the champion" + (f" (previous: {previous})" if previous else ""))
    return {"name": name, "version": str(version.version), "previous": previous, "run_id": ref["run_id"]}


def set_tags(tags):
    if enabled():
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def record_promotion(promoted, reason, registered=None):
    """Promote's verdict on its run: tags dood.promoted / dood.promotion_reason, metric promoted (0/1)."""
    if not enabled():
        return
    with step_run():
        set_tags({"dood.promoted": str(promoted).lower(), "dood.promotion_reason": reason})
        if registered:
            set_tags({"dood.registered_model": registered["name"], "dood.model_version": registered["version"]})
        log_metrics({"promoted": int(promoted)})
