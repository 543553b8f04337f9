#!/usr/bin/env python3
"""Prepare: pick this run's deterministic slice of the data set and split it train/test.

The data set (breast cancer, 569 rows) ships inside scikit-learn, so nothing is downloaded.
The sample is seeded by the run's date: re-running a date gives identical data, while
different dates see different data, much like daily partitions would.

When the date's partition has landed (the ingest DAG of dags/dood_example_assets.py writes it:
$DOOD_INPUT_DIR/$DOOD_PIPELINE/<date>/part.csv, features then target), prepare reads that file
instead. It holds the same rows the sample draws (at the default sample_fraction), so the
metrics do not depend on whether the data landed first.
"""

import os

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from common import EXIT_BAD_CONFIG, env, fail, log, params, run_date, save_split, work_dir, write_json, write_result
from tracking import log_metrics, log_params, step_run


def landed_partition(day):
    """$DOOD_INPUT_DIR/$DOOD_PIPELINE/<date>/part.csv when it is there, else None."""
    input_dir, pipeline = env("DOOD_INPUT_DIR"), env("DOOD_PIPELINE")
    if not (input_dir and pipeline):
        return None
    path = os.path.join(input_dir, pipeline, day.isoformat(), "part.csv")
    return path if os.path.isfile(path) else None


def read_partition(path):
    """A landed CSV (a header, the feature columns, then `target`): features, labels, feature names."""
    with open(path) as f:
        names = f.readline().strip().split(",")
    if len(names) < 2 or names[-1] != "target":
        fail(f"{path}: its header must name the feature columns, then target (it says {names[:3]}...)", EXIT_BAD_CONFIG)
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.shape[0] == 0 or data.shape[1] != len(names):
        fail(f"{path}: {data.shape[0]} rows of {data.shape[1]} columns, its header names {len(names)}", EXIT_BAD_CONFIG)
    return data[:, :-1], data[:, -1].astype(int), names[:-1]


def main():
    p = params()
    day, source = run_date(p)
    seed = int(day.strftime("%Y%m%d"))
    log(f"run {env('DOOD_RUN_ID', '-')}: data date {day} (from {source}), seed {seed}")
    landed = landed_partition(day)
    if landed:
        X, y, names = read_partition(landed)
        size = len(y)
        log(f"read the landed partition {landed} ({size} rows)")
    else:
        input_dir = env("DOOD_INPUT_DIR")
        if input_dir:
            log(f"no landed partition for {day} under {input_dir}: sampling the built-in data set")
        data = load_breast_cancer()
        rng = np.random.default_rng(seed)
        size = int(round(len(data.target) * p["sample_fraction"]))
        rows = np.sort(rng.choice(len(data.target), size=size, replace=False))
        X, y, names = data.data[rows], data.target[rows], list(data.feature_names)
        log(f"sampled {size} of {len(data.target)} rows ({p['sample_fraction']:.0%})")

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=p["test_size"], random_state=seed % 2**32, stratify=y
    )
    log(f"wrote {save_split('train', X_train, y_train, names)} ({len(y_train)} rows)")
    log(f"wrote {save_split('test', X_test, y_test, names)} ({len(y_test)} rows)")

    meta = {
        "dataset": "sklearn breast_cancer",
        # the landed partition read, relative to the data root ($DOOD_INPUT_DIR); null: sampled
        "partition": os.path.relpath(landed, env("DOOD_INPUT_DIR")) if landed else None,
        "data_date": day.isoformat(),
        "seed": seed,
        "rows": int(size),
        "train_rows": len(y_train),
        "test_rows": len(y_test),
        "features": X.shape[1],
    }
    write_json(work_dir("data", "meta.json"), meta)  # promote records it in source.json
    with step_run():  # MLflow, when dood tracks the run
        log_params({k: meta[k] for k in ("dataset", "data_date", "seed", "features")})
        log_metrics({k: meta[k] for k in ("rows", "train_rows", "test_rows")})
    write_result(meta)


if __name__ == "__main__":
    main()
