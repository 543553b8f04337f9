"""dood-gpus: each GPU of the inventory, free or held by which task."""

from __future__ import annotations

from dood.gpus.cli import render, table
from dood.gpus.holdings import holders
from tests.unit.gpus.listings import holder_entry

# --- dood-gpus ---


def test_dood_gpus_lists_each_gpu_free_or_held():
    labels = {"dood.dag_id": "d", "dood.task_id": "t", "dood.run_id": "r", "dood.try_number": "1"}
    holding = holders([holder_entry("c", "running", "1,7", **labels)], created_hold_seconds=0)
    rows = table(("0", "1"), holding)
    assert [(row["gpu"], row["state"], row["listed"]) for row in rows] == [
        ("0", "free", True),
        ("1", "held", True),
        ("7", "held", False),
    ]
    assert rows[1]["holder"]["task_id"] == "t"
    shown = render("unix:///var/run/docker.sock", ("0", "1"), holding)
    assert "2 in gpus.devices, 1 free, 2 held" in shown
    assert "GPU 1    held by d/t/r try 1 (c, running)" in shown
    assert "GPU 7    held by d/t/r try 1 (c, running)  (not in gpus.devices)" in shown
