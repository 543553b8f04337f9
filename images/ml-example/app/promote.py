#!/usr/bin/env python3
"""Promote: make this run's model the champion if it beats the current one.

Only a better metric promotes, and, unless the pipeline's `promotion` settings allow it, never from a
backfill (DOOD_PROMOTE_FROM_BACKFILL) nor a model trained on data older than the champion's
(DOOD_PROMOTE_REQUIRE_NEWER_DATA); force_promote overrides all three.
The champion lives in $DOOD_MODELS_DIR/champion/ (model.joblib, metrics.json, source.json).
It is rebuilt in a temp dir next to it and swapped in with a rename, so readers never see
a half-written champion. Exit code 99 means "kept the current champion" (task skipped).
The result of a promotion names the model (host path, sha256 digest) and its metrics: with the pipeline's
`model_asset`, dood makes it the extra of the model asset's event.
"""

import datetime as dt
import fcntl
import hashlib
import os
import shutil
import tempfile

from common import (
    EXIT_BAD_CONFIG,
    EXIT_SKIP,
    env,
    fail,
    log,
    params,
    read_json,
    remove_tree,
    run_info,
    swap_dirs,
    work_dir,
    write_json,
    write_result,
)
from tracking import record_promotion, register_champion, step_run


def main():
    p = params()
    models_dir = env("DOOD_MODELS_DIR")
    if not models_dir or not os.path.isdir(models_dir):
        fail(f"DOOD_MODELS_DIR={models_dir!r} is not a directory", EXIT_BAD_CONFIG)
    if not os.access(models_dir, os.W_OK):
        fail(f"DOOD_MODELS_DIR={models_dir} is not writable (promote needs it mounted read-write)", EXIT_BAD_CONFIG)
    eval_path, model_path = work_dir("metrics", "eval.json"), work_dir("model", "model.joblib")
    for path in (eval_path, model_path):
        if not os.path.exists(path):
            fail(f"{path} is missing: run train and evaluate first", EXIT_BAD_CONFIG)
    new = read_json(eval_path)

    # one promote at a time reads, registers and swaps the champion; kept referenced, so held until exit
    lock = hold_promotion_lock(models_dir)  # noqa: F841
    champion = os.path.join(models_dir, "champion")
    refusal = policy_refusal(champion)
    if refusal and not p["force_promote"]:
        log(f"not promoting: {refusal} (set force_promote to override)")
        record_promotion(False, refusal)  # MLflow: the registry's aliases stay where they are
        raise SystemExit(EXIT_SKIP)
    old_acc = None
    if os.path.exists(os.path.join(champion, "metrics.json")):
        try:
            old_acc = float(read_json(os.path.join(champion, "metrics.json"))["accuracy"])
        except (ValueError, KeyError, TypeError) as exc:
            if not p["force_promote"]:
                fail(f"champion metrics.json is unreadable ({exc!r}); set force_promote to replace it")
    log(f"new accuracy {new['accuracy']}, champion accuracy {old_acc if old_acc is not None else 'none'}")

    better = old_acc is None or new["accuracy"] > old_acc
    if not better and not p["force_promote"]:
        log(
            f"not promoting: new accuracy {new['accuracy']} is not greater than the champion's "
            f"{old_acc} (set force_promote to override)"
        )
        record_promotion(False, f"accuracy {new['accuracy']} is not greater than the champion's {old_acc}")
        raise SystemExit(EXIT_SKIP)

    reason = "forced" if not better else ("first champion" if old_acc is None else "better accuracy")
    with step_run():  # MLflow, when dood tracks the run: a new version with the alias champion, before the swap
        registered = register_champion(
            {
                "dood.run_id": env("DOOD_RUN_ID"),
                "accuracy": new["accuracy"],
                "data_interval_end": env("DOOD_DATA_INTERVAL_END"),
                "reason": reason,
            }
        )
    record_promotion(True, reason, registered)
    staging = tempfile.mkdtemp(prefix=".champion-new-", dir=models_dir)
    shutil.copy2(model_path, os.path.join(staging, "model.joblib"))
    write_json(os.path.join(staging, "metrics.json"), new)
    meta_path = work_dir("data", "meta.json")
    data = read_json(meta_path) if os.path.exists(meta_path) else {}
    source = {
        **run_info(),
        "partition": env("DOOD_HOST_WORK_DIR") or env("DOOD_WORK_DIR"),
        "run_type": env("DOOD_RUN_TYPE"),
        "data_interval_end": env("DOOD_DATA_INTERVAL_END"),
        "data_date": data.get("data_date"),
        "seed": data.get("seed"),
        "previous_accuracy": old_acc,
        "forced": not better,
        "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        **({"mlflow": registered} if registered else {}),
    }
    write_json(os.path.join(staging, "source.json"), source)
    os.chmod(staging, 0o755)  # noqa: S103 - mkdtemp creates 0700; the registry should stay readable
    remove_tree(swap_dirs(staging, champion))
    log(f"promoted ({reason}): {champion} now holds run {source['run_id'] or '-'}")
    champion_host = os.path.join(env("DOOD_HOST_MODELS_DIR"), "champion") if env("DOOD_HOST_MODELS_DIR") else champion
    write_result(
        {
            "promoted": True,
            "reason": reason,
            "accuracy": new["accuracy"],
            "previous_accuracy": old_acc,
            "champion_dir": champion_host,
            "metrics": new,
            "model_path": os.path.join(champion_host, "model.joblib"),
            "model_digest": sha256_of(model_path),  # the file copied into champion/, read from this run's partition
            **({"mlflow": registered} if registered else {}),
        }
    )


def hold_promotion_lock(models_dir):
    """Two runs promoting at once (a scheduled and a manual run) would both read "no champion", both register a
    version and leave the alias and the champion/ directory disagreeing: an exclusive lock on a file in the
    models directory (every promote of the pipeline mounts it), held until this process exits."""
    lock = open(os.path.join(models_dir, ".promote.lock"), "a")  # held open until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another promote of this pipeline is running: waiting for it to finish")
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def policy_refusal(champion):
    """Why the pipeline's promotion settings forbid this run to replace the champion, or None."""
    run_type = env("DOOD_RUN_TYPE")
    if run_type == "backfill" and env("DOOD_PROMOTE_FROM_BACKFILL", "false") != "true":
        return "this is a backfill run, and promotion.from_backfill is off"
    source_path = os.path.join(champion, "source.json")
    if env("DOOD_PROMOTE_REQUIRE_NEWER_DATA", "true") == "true" and os.path.exists(source_path):
        theirs = _instant(read_json(source_path).get("data_interval_end"))
        ours = _instant(env("DOOD_DATA_INTERVAL_END"))
        if theirs and ours and ours < theirs:
            return (
                f"this run's data ends {ours.isoformat()}, before the champion's ({theirs.isoformat()}), "
                "and promotion.require_newer_data is on"
            )
    return None


def _instant(value):
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


if __name__ == "__main__":
    main()
