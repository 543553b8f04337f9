#!/usr/bin/env python3
"""Prepare: pick this run's deterministic slice of the data set and split it train/test.

The data set (breast cancer, 569 rows) ships inside scikit-learn, so nothing is downloaded.
The sample is seeded by the run's date: re-running a date gives identical data, while
different dates see different data, much like daily partitions would.
"""

import os

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from common import env, log, params, run_date, save_split, work_dir, write_json, write_result
from tracking import log_metrics, log_params, step_run


def main():
    p = params()
    day, source = run_date(p)
    seed = int(day.strftime("%Y%m%d"))
    log(f"run {env('DOOD_RUN_ID', '-')}: data date {day} (from {source}), seed {seed}")
    input_dir = env("DOOD_INPUT_DIR")
    if input_dir:
        entries = len(os.listdir(input_dir)) if os.path.isdir(input_dir) else 0
        log(f"input dir {input_dir} has {entries} entries (this example uses the built-in data set)")

    data = load_breast_cancer()
    rng = np.random.default_rng(seed)
    size = int(round(len(data.target) * p["sample_fraction"]))
    rows = np.sort(rng.choice(len(data.target), size=size, replace=False))
    X, y = data.data[rows], data.target[rows]
    log(f"sampled {size} of {len(data.target)} rows ({p['sample_fraction']:.0%})")

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=p["test_size"], random_state=seed % 2**32, stratify=y
    )
    names = list(data.feature_names)
    log(f"wrote {save_split('train', X_train, y_train, names)} ({len(y_train)} rows)")
    log(f"wrote {save_split('test', X_test, y_test, names)} ({len(y_test)} rows)")

    meta = {
        "dataset": "sklearn breast_cancer",
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
