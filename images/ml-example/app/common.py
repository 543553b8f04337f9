"""Helpers shared by the example ML steps.

Each step runs in its own container started by the Airflow operator, so everything it
knows comes from the DOOD_* environment variables and from files in the run's work dir.
Nothing here touches the network.
"""

import ctypes
import datetime as dt
import json
import os
import shutil
import sys

EXIT_BAD_CONFIG = 2  # the environment or parameters are unusable
# evaluate: the model is not good enough. dood's no-retry code: retrying cannot change that verdict.
EXIT_QUALITY_GATE = int(os.environ.get("DOOD_NO_RETRY_EXIT_CODE") or 3)
EXIT_SKIP = 99  # promote: nothing to do; the DAG maps this to "skipped"

DEFAULTS = {
    "n_estimators": 100,
    "max_depth": None,  # None = grow trees fully
    "min_accuracy": 0.8,
    "force_promote": False,
    "dataset_date": None,  # None = use the run's data interval start
    "sample_fraction": 0.8,
    "test_size": 0.25,
    "random_state": 42,
}

STEP = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "step"


def log(msg):
    """Print one progress line; stdout becomes the Airflow task log."""
    print(f"[{STEP}] {msg}", flush=True)


def fail(msg, code=1):
    """Explain why the step stops and exit with a code the DAG can interpret."""
    log(f"FAILED: {msg}")
    sys.exit(code)


def env(name, default=""):
    return os.environ.get(name, "").strip() or default


def _as_bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def params():
    """DOOD_PARAMS merged over DEFAULTS; values may arrive as strings from the UI."""
    try:
        raw = json.loads(env("DOOD_PARAMS", "{}"))
    except json.JSONDecodeError as exc:
        fail(f"DOOD_PARAMS is not valid JSON: {exc}", EXIT_BAD_CONFIG)
    if not isinstance(raw, dict):
        fail("DOOD_PARAMS must be a JSON object", EXIT_BAD_CONFIG)
    p = {**DEFAULTS, **{k: v for k, v in raw.items() if v not in (None, "")}}
    try:
        p["n_estimators"] = int(p["n_estimators"])
        p["max_depth"] = None if p["max_depth"] is None else int(p["max_depth"])
        p["random_state"] = int(p["random_state"])
        for key in ("min_accuracy", "sample_fraction", "test_size"):
            p[key] = float(p[key])
    except (TypeError, ValueError) as exc:
        fail(f"bad parameter value in DOOD_PARAMS: {exc}", EXIT_BAD_CONFIG)
    p["force_promote"] = _as_bool(p["force_promote"])
    return p


def run_date(p):
    """The date whose data this run processes: dataset_date param, else the data
    interval start, else the logical date (manual runs), else today (UTC)."""
    candidates = [
        ("param dataset_date", p.get("dataset_date")),
        ("DOOD_DATA_INTERVAL_START", env("DOOD_DATA_INTERVAL_START")),
        ("DOOD_LOGICAL_DATE", env("DOOD_LOGICAL_DATE")),
    ]
    for source, value in candidates:
        if value:
            try:
                return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).date(), source
            except ValueError:
                fail(f"{source}={value!r} is not an ISO 8601 date", EXIT_BAD_CONFIG)
    return dt.datetime.now(dt.timezone.utc).date(), "today (UTC)"


def work_dir(*parts):
    """A path inside this run's partition ($DOOD_WORK_DIR), creating parent dirs."""
    root = env("DOOD_WORK_DIR")
    if not root:
        fail("DOOD_WORK_DIR is not set", EXIT_BAD_CONFIG)
    path = os.path.join(root, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def host_path(path):
    """`path` (inside the partition) as the Docker host names it ($DOOD_HOST_WORK_DIR), for results a person
    reads; the container path when the host path is not known."""
    root, host_root = env("DOOD_WORK_DIR"), env("DOOD_HOST_WORK_DIR")
    if root and host_root and (path == root or path.startswith(root.rstrip("/") + "/")):
        return host_root.rstrip("/") + path[len(root.rstrip("/")) :]
    return path


def write_json(path, obj):
    """Write JSON atomically (temp file + rename) so readers never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_result(obj):
    """Publish the step's result (only called on success); it becomes the task's result."""
    path = env("DOOD_RESULT_FILE")
    if path:
        write_json(path, obj)
    log(f"result: {json.dumps(obj, sort_keys=True)}")


def run_info():
    return {k: env(f"DOOD_{k.upper()}") for k in ("run_id", "dag_id", "task_id", "logical_date")}


def swap_dirs(new, target):
    """Make `new` appear at `target` in one step; returns the old dir's path (or None).

    Uses renameat2(RENAME_EXCHANGE) so `target` never goes missing; falls back to two
    renames where the kernel or file system does not support it.
    """
    if not os.path.exists(target):
        os.rename(new, target)
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(target), rename_exchange) == 0:
            return new  # `new` now holds the previous contents of `target`
    except (AttributeError, OSError):
        pass
    old = f"{target}.old{os.getpid()}"
    os.rename(target, old)
    os.rename(new, target)
    return old


def remove_tree(path):
    if path and os.path.exists(path):
        shutil.rmtree(path)


def save_split(name, X, y, feature_names):
    """Store a split as CSV (features..., target) under $DOOD_WORK_DIR/data/: plain text
    keeps partitions inspectable by people and other tools."""
    import numpy as np

    path = work_dir("data", f"{name}.csv")
    np.savetxt(
        path,
        np.column_stack([X, y]),
        delimiter=",",
        fmt="%.10g",
        header=",".join([*feature_names, "target"]),
        comments="",
    )
    return path


def load_split(name):
    """Read back a split written by prepare.py; fail clearly if prepare has not run."""
    import numpy as np

    path = work_dir("data", f"{name}.csv")
    if not os.path.exists(path):
        fail(f"{path} is missing: run prepare first", EXIT_BAD_CONFIG)
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return data[:, :-1], data[:, -1].astype(int)
