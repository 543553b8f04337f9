#!/usr/bin/env python3
"""Train: grow a gradient-boosting classifier on the run's train split, one epoch (a slice of trees) at a time.

Hyperparameters come from DOOD_PARAMS (n_estimators trees of max_depth, over `epochs` epochs) so a run can be
re-tried with other values without rebuilding the image; the model stays in the run's partition until
promote copies it.

Checkpoints: when dood mounts a checkpoint directory ($DOOD_CHECKPOINT_DIR: the same for every try of the task
instance), the state is saved there after every epoch, in one file replaced atomically: the model (whose
random state, `_rng`, is its own: warm-started trees draw their subsamples from it) and the epoch it reached.
A try that finds one for the same parameters and data resumes from it ("resumed from epoch k") and trains only
the epochs left, so it ends with the model an uninterrupted run would have made, predictions included.
$DOOD_EPOCH_SECONDS (default 0) waits after each epoch (demos and tests: time to kill a training mid-way).
"""

import hashlib
import json
import os
import time

import joblib
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, f1_score

from common import EXIT_BAD_CONFIG, env, fail, host_path, load_split, log, params, work_dir, write_json, write_result
from tracking import log_metrics, log_model, log_params, step_run

CHECKPOINT_FILE = "checkpoint.joblib"
STATE_FILE = "state.json"  # what the checkpoint holds, for people (the resume reads CHECKPOINT_FILE only)


def trees_after(epoch, epochs, n_estimators):
    """Trees the model has after `epoch` of `epochs` (the last epoch reaches n_estimators)."""
    return max(1, round(n_estimators * epoch / epochs))


def fingerprint(hyper, X, y):
    """What a checkpoint must match to be resumed: the parameters and the training data."""
    digest = hashlib.sha256(json.dumps(hyper, sort_keys=True).encode())
    digest.update(X.tobytes())
    digest.update(y.tobytes())
    return digest.hexdigest()[:32]


def predictions_digest(model, X):
    """The model's predicted probabilities on X, hashed: equal for equal models."""
    return hashlib.sha256(model.predict_proba(X).round(12).tobytes()).hexdigest()[:32]


def load_checkpoint(directory, expected):
    """(model, epoch) from the checkpoint directory, or (None, 0) to start from zero (saying why)."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    if not os.path.exists(path):
        log(f"checkpoint directory {directory} is empty: starting from epoch 0")
        return None, 0
    try:
        saved = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: start over rather than fail
        log(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {exc}): starting from epoch 0")
        return None, 0
    if saved.get("fingerprint") != expected:
        log(f"checkpoint {path} is of other parameters or data: starting from epoch 0")
        return None, 0
    log(f"resumed from epoch {saved['epoch']}")
    return saved["model"], saved["epoch"]


def save_checkpoint(directory, model, epoch, epochs, fp):
    """The model and its epoch in one file, replaced atomically: a kill leaves the previous epoch's or this one's."""
    path = os.path.join(directory, CHECKPOINT_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    joblib.dump({"model": model, "epoch": epoch, "epochs": epochs, "fingerprint": fp}, tmp)
    os.replace(tmp, path)
    write_json(os.path.join(directory, STATE_FILE), {"epoch": epoch, "epochs": epochs, "trees": len(model.estimators_)})


def main():
    p = params()
    X, y = load_split("train")
    try:
        epochs = int(p.get("epochs") or 10)
    except (TypeError, ValueError):
        fail(f"epochs must be a whole number, got {p.get('epochs')!r}", EXIT_BAD_CONFIG)
    if epochs < 1:
        fail(f"epochs must be 1 or more, got {epochs}", EXIT_BAD_CONFIG)
    if epochs > p["n_estimators"]:
        log(f"{epochs} epochs of {p['n_estimators']} trees: one tree an epoch, {p['n_estimators']} epochs")
        epochs = p["n_estimators"]
    pause = float(env("DOOD_EPOCH_SECONDS", "0"))
    hyper = {k: p[k] for k in ("n_estimators", "max_depth", "random_state")}
    fp = fingerprint({**hyper, "epochs": epochs}, X, y)
    checkpoint_dir = env("DOOD_CHECKPOINT_DIR")

    model, done = (None, 0)
    if checkpoint_dir:
        model, done = load_checkpoint(checkpoint_dir, fp)
    if model is None:
        # warm_start: each fit adds trees; the model's own RNG (`_rng`, seeded once) draws every subsample
        model = GradientBoostingClassifier(
            n_estimators=trees_after(1, epochs, hyper["n_estimators"]),
            max_depth=hyper["max_depth"],
            subsample=0.8,
            random_state=hyper["random_state"],
            warm_start=True,
        )
    log(f"training GradientBoostingClassifier{hyper} on {len(y)} rows, epochs {done + 1}..{epochs} of {epochs}")
    started = time.monotonic()
    for epoch in range(done + 1, epochs + 1):
        model.set_params(n_estimators=trees_after(epoch, epochs, hyper["n_estimators"]))
        model.fit(X, y)
        if checkpoint_dir:
            save_checkpoint(checkpoint_dir, model, epoch, epochs, fp)
        log(
            f"epoch {epoch}/{epochs}: {len(model.estimators_)} trees"
            + (" (checkpoint saved)" if checkpoint_dir else "")
        )
        if pause and epoch < epochs:
            time.sleep(pause)
    seconds = round(time.monotonic() - started, 3)

    model_path = work_dir("model", "model.joblib")
    tmp = f"{model_path}.tmp{os.getpid()}"
    joblib.dump(model, tmp)
    os.replace(tmp, model_path)
    log(f"saved model to {model_path} ({os.path.getsize(model_path)} bytes) after {seconds}s")

    pred = model.predict(X)
    metrics = {
        **hyper,
        "epochs": epochs,
        "resumed_from_epoch": done,
        "epochs_run": epochs - done,
        "train_rows": len(y),
        "fit_seconds": seconds,
        "train_accuracy": round(float(accuracy_score(y, pred)), 6),
        "train_f1": round(float(f1_score(y, pred)), 6),
        "predictions_sha256": predictions_digest(model, X),
    }
    write_json(work_dir("metrics", "train.json"), metrics)
    with step_run():  # MLflow, when dood tracks the run: a retried try logs into the same run
        log_params({**hyper, "epochs": epochs, "train_rows": len(y)})
        log_metrics(
            {k: metrics[k] for k in ("train_accuracy", "train_f1", "fit_seconds", "resumed_from_epoch", "epochs_run")}
        )
        log_model(model, X)
    log(f"train accuracy {metrics['train_accuracy']}, f1 {metrics['train_f1']}")
    write_result({**metrics, "model_path": host_path(model_path), "model_path_in_container": model_path})


if __name__ == "__main__":
    main()
