#!/usr/bin/env python3
"""Train: fit a RandomForestClassifier on the run's train split.

Hyperparameters come from DOOD_PARAMS so a run can be re-tried with other values without
rebuilding the image; the model stays in the run's partition until promote copies it.
"""
import os
import time

import joblib
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score

from common import host_path, load_split, log, params, work_dir, write_json, write_result


def main():
    p = params()
    X, y = load_split("train")
    hyper = {k: p[k] for k in ("n_estimators", "max_depth", "random_state")}
    log(f"training RandomForestClassifier{hyper} on {len(y)} rows")
    started = time.monotonic()
    model = RandomForestClassifier(**hyper).fit(X, y)
    seconds = round(time.monotonic() - started, 3)

    model_path = work_dir("model", "model.joblib")
    tmp = f"{model_path}.tmp{os.getpid()}"
    joblib.dump(model, tmp)
    os.replace(tmp, model_path)
    log(f"saved model to {model_path} ({os.path.getsize(model_path)} bytes) after {seconds}s")

    pred = model.predict(X)
    metrics = {**hyper, "train_rows": len(y), "fit_seconds": seconds,
               "train_accuracy": round(float(accuracy_score(y, pred)), 6),
               "train_f1": round(float(f1_score(y, pred)), 6)}
    write_json(work_dir("metrics", "train.json"), metrics)
    log(f"train accuracy {metrics['train_accuracy']}, f1 {metrics['train_f1']}")
    write_result({**metrics, "model_path": host_path(model_path), "model_path_in_container": model_path})


if __name__ == "__main__":
    main()
