"""DAGs of hostile step output (an outside attack run's findings): result files an XCom cannot carry, and
control sequences in the log. Run with `dag.test()` by tests/integration/test_hostile_output.py."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from dood import DoodContainerOperator

IMAGE = "dood-test-busybox:latest"
START = datetime(2026, 1, 1)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def brackets(count: int) -> str:
    """Shell writing `count` '[' then `count` ']' to the result file."""
    return (
        f"(head -c {count} /dev/zero | tr '\\0' '['; head -c {count} /dev/zero | tr '\\0' ']') > \"$DOOD_RESULT_FILE\""
    )


def result(text: str) -> str:
    return f"printf '%s' '{text}' > \"$DOOD_RESULT_FILE\""


#: task id -> (the shell that writes its result file, what its ResultFileError says).
HOSTILE_RESULTS = {
    "deep": (brackets(100_000), "nests arrays or objects 100000 levels deep (at most 64)"),
    "big_int": ("head -c 900000 /dev/zero | tr '\\0' '9' > \"$DOOD_RESULT_FILE\"", "has an integer of 900000 digits"),
    "directory": ('mkdir "$DOOD_RESULT_FILE"', "is not a regular file (a directory"),
    "nan": (result('{"loss": NaN}'), "has NaN, which is not a JSON number"),
    "infinity": (result('{"loss": -Infinity}'), "has -Infinity, which is not a JSON number"),
    "overflow": (result('{"loss": 1e999}'), "has a number beyond a float's range (1e999)"),
    "surrogate": (result('{"s": "\\ud800"}'), "has an unpaired surrogate (\\ud800) in a string"),
    "nul": (result('{"s": "a\\u0000b"}'), "has a NUL character (\\u0000) in a string"),
}
#: task id -> (the shell writing a result at the limits, the XCom it becomes).
PLAIN_RESULTS = {
    "depth_64": (brackets(64), nested(64)),
    "plain": (
        result('{"n": 12345678901234567890, "emoji": "\\ud83d\\ude00"}'),
        {"n": 12345678901234567890, "emoji": "😀"},
    ),
}

#: What the step prints: clear screen, an OSC 8 hyperlink, a DCS string, backspaces over a word, a CR before
#: a forged Airflow line, a bidi override, a C1 CSI, colour; then a result, so the task succeeds.
HOSTILE_LOG = (
    "printf 'before-clear\\033[2J\\033[Hafter-clear\\n'; "
    "printf 'link: \\033]8;;https://evil.example/\\033\\\\click-me\\033]8;;\\033\\\\\\n'; "
    "printf 'dcs: \\033Pq#0;2;0;0;0\\033\\\\\\n'; "
    "printf 'secret\\b\\b\\b\\b\\b\\bpublic\\n'; "
    "printf 'real output\\rMarking task as SUCCESS\\n'; "
    "printf 'bidi: \\342\\200\\256gnp.exe\\342\\200\\254\\n'; "
    "printf 'c1: \\302\\2332J\\n'; "
    "printf '\\033[32mgreen-text\\033[0m\\n'; " + result('{"ok": true}')
)

DAGS: dict[str, DAG] = {}

with DAG("dood_it_hostile_results", schedule=None, start_date=START, catchup=False) as results_dag:
    for task_id, (script, _) in HOSTILE_RESULTS.items():
        # kept after it ended, to show it exited by itself and nothing stopped it
        DoodContainerOperator(task_id=task_id, image=IMAGE, command=sh(script), auto_remove="never")
    for task_id, (script, _) in PLAIN_RESULTS.items():
        DoodContainerOperator(task_id=task_id, image=IMAGE, command=sh(script))
DAGS[results_dag.dag_id] = results_dag

with DAG("dood_it_hostile_log", schedule=None, start_date=START, catchup=False) as log_dag:
    DoodContainerOperator(task_id="run", image=IMAGE, command=sh(HOSTILE_LOG))
DAGS[log_dag.dag_id] = log_dag
