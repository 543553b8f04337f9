#!/usr/bin/env python3
"""Evaluate: score the trained model on the held-out test split and gate on quality.

Exits with code 3 when accuracy is below min_accuracy, so a bad model fails the run
before promote can even consider it. eval.json is written either way for inspection.
"""

import os

import joblib
from sklearn.metrics import accuracy_score, f1_score

from common import EXIT_BAD_CONFIG, EXIT_QUALITY_GATE, fail, load_split, log, params, work_dir, write_json, write_result
from tracking import log_dict, log_metrics, step_run


def main():
    p = params()
    model_path = work_dir("model", "model.joblib")
    if not os.path.exists(model_path):
        fail(f"{model_path} is missing: run train first", EXIT_BAD_CONFIG)
    model = joblib.load(model_path)
    X, y = load_split("test")
    pred = model.predict(X)
    metrics = {
        "accuracy": round(float(accuracy_score(y, pred)), 6),
        "f1": round(float(f1_score(y, pred)), 6),
        "test_rows": len(y),
        "min_accuracy": p["min_accuracy"],
    }
    metrics["passed"] = metrics["accuracy"] >= p["min_accuracy"]
    write_json(work_dir("metrics", "eval.json"), metrics)
    with step_run():  # MLflow, when dood tracks the run: the metrics the quality gate reads, and eval.json
        log_metrics(metrics)
        log_dict(metrics, "eval.json")
    log(f"test accuracy {metrics['accuracy']}, f1 {metrics['f1']} on {len(y)} rows")
    if not metrics["passed"]:
        fail(f"accuracy {metrics['accuracy']} is below min_accuracy {p['min_accuracy']}", EXIT_QUALITY_GATE)
    write_result(metrics)


if __name__ == "__main__":
    main()
