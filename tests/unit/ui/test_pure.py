"""dood.ui's pure parts: usage from stats samples, rows and the orphan rule, the chart (escaped)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dood.janitor import MISSING
from dood.ui import chart, samples
from dood.ui.metrics import RunMetrics, numbers
from dood.ui.rows import TaskKey, build_row, is_orphan, select

LABELS = {
    "dood.managed": "true",
    "dood.dag_id": "d",
    "dood.run_id": "r",
    "dood.task_id": "t",
    "dood.map_index": "-1",
    "dood.try_number": "2",
}


def _sample(total: int, system: int, usage: int = 300, cache: int = 100) -> dict:
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": 2},
        "memory_stats": {"usage": usage, "limit": 1000, "stats": {"inactive_file": cache}},
    }


def test_cpu_percent_is_the_change_between_two_samples():
    before = samples.cpu_reading(_sample(1_000, 10_000))
    now = _sample(1_500, 12_000)
    used = samples.usage(now, before)
    assert used.cpu_percent == 50.0  # 500 / 2000 * 2 CPUs
    assert (used.memory_bytes, used.memory_limit) == (200, 1000)
    assert samples.usage(now, None).cpu_percent is None  # the first sample gives no rate


def test_gpus_held():
    gpu = [["gpu"]]
    assert samples.gpus_held({"DeviceRequests": [{"Count": 2, "Capabilities": gpu}]}) == 2
    assert samples.gpus_held({"DeviceRequests": [{"DeviceIDs": ["1", "3"], "Capabilities": gpu}]}) == 2
    assert samples.gpus_held({"DeviceRequests": [{"Count": -1, "Capabilities": gpu}]}) == "all"
    assert samples.gpus_held({}) is None


def test_a_live_rows_gpus_come_from_its_claim_label_without_an_inspect():
    entry = {"Id": "c1", "State": "running", "Labels": {"dood.dag_id": "d", "dood.gpus": "2,5"}}
    assert build_row(entry).gpus == 2
    assert build_row({**entry, "Labels": {"dood.dag_id": "d"}}).gpus is None
    ended = {**entry, "State": "exited"}
    assert build_row(ended, {"State": {"ExitCode": 3, "OOMKilled": True}}).exit_code == 3


def test_rows_orphans_and_filters():
    created = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
    running = {"Id": "a" * 64, "Names": ["/n1"], "Labels": LABELS, "State": "running", "Created": created}
    exited = {**running, "Id": "b" * 64, "State": "exited", "Created": created + 60}
    inspected = {"State": {"ExitCode": 137, "OOMKilled": True}}
    rows = [build_row(running, None, None, "success"), build_row(exited, inspected, None, None)]
    assert rows[0].orphan and rows[0].task == TaskKey("d", "r", "t", -1) and rows[0].try_number == 2
    assert (rows[1].exit_code, rows[1].oom_killed, rows[1].orphan) == (137, True, False)
    assert [r.state for r in select(rows, dag_id=None, state=None)] == ["exited", "running"]  # newest first
    assert [r.state for r in select(rows, dag_id=None, state="orphan")] == ["running"]
    assert select(rows, dag_id="other", state=None) == []
    assert is_orphan("running", MISSING) and not is_orphan("running", "running") and not is_orphan("exited", MISSING)


def _run(run_id: str, day: int, value: float, kind: str = "backfill", promoted: bool = False) -> RunMetrics:
    when = datetime(2026, 1, day, tzinfo=timezone.utc)
    return RunMetrics(run_id, kind, when, when + timedelta(days=1), "success", {"accuracy": value}, promoted)


def test_chart_points_threshold_champion_and_escaping():
    runs = [_run("<script>x</script>", 1, 0.88), _run("b", 2, 0.93, promoted=True), _run("c", 3, 0.83, "manual")]
    svg = chart.svg(runs, "accuracy", 0.85)
    assert svg.count('class="point') == 3 and svg.count('class="threshold"') == 1
    assert svg.count('class="champion"') == 1 and 'class="point manual"' in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "No run" in chart.svg([], "accuracy", 0.85)


def test_chart_spaces_runs_evenly_in_date_order_with_bounded_ticks():
    """A January backfill next to a December run: evenly spaced in date order, not crushed in one column."""
    import re

    runs = [_run("late", 28, 0.9, "scheduled"), *(_run(f"b{d}", d, 0.8 + d / 100) for d in range(1, 20))]
    svg = chart.svg(runs, "accuracy", None)
    xs = [float(x) for x in re.findall(r'<rect class="point backfill" x="([\d.]+)"', svg)]
    gaps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert len(xs) == 19 and max(gaps) - min(gaps) < 0.2 and min(gaps) > 10  # evenly, in date order
    scheduled_x = float(re.search(r'<circle class="point scheduled" cx="([\d.]+)"', svg).group(1))
    assert scheduled_x > max(xs)  # the latest date last
    ticks = re.findall(r'<text class="tick" [^>]*text-anchor="(?:middle|end)">(\d{4}-[^<]+)</text>', svg)
    assert len(ticks) <= chart.MAX_TICKS + 1 and ticks[0] == "2026-01-01" and ticks[-1] == "2026-01-28"


def test_numbers_keeps_numeric_metrics_only():
    assert numbers({"accuracy": 0.9, "passed": True, "rows": 10, "name": "x"}) == {"accuracy": 0.9, "rows": 10.0}
    assert numbers([1, 2]) == {}
