"""dood.ui.reader's sampling: a page never waits for every stats sample (each waits for the daemon's tick);
it shows the latest of each, asks again only for stale ones, and never asks twice at once."""

from __future__ import annotations

import threading
import time

from dood.ui.reader import EngineReader

SAMPLE = {
    "memory_stats": {"usage": 50 * 2**20, "limit": 2**30},
    "cpu_stats": {"cpu_usage": {"total_usage": 2_000}, "system_cpu_usage": 20_000, "online_cpus": 2},
    "precpu_stats": {},
}


class HeldStats:
    """A Docker API whose stats calls return only when the test releases them (the daemon's tick)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def stats(self, container_id, stream, one_shot):
        assert stream is False and one_shot is True
        with self._lock:
            self.asked.append(container_id)
        assert self.release.wait(10), "the test never released the stats calls"
        return SAMPLE


def test_a_page_does_not_wait_for_samples_beyond_its_budget_and_shows_them_on_the_next_refresh():
    api = HeldStats()
    reader = EngineReader(api)
    ids = [f"c{i}" for i in range(40)]
    assert reader.usage_many(ids, budget=0.01) == {}  # none has arrived: the page shows none, at once
    assert reader.usage_many(ids, budget=0.01) == {}  # still in flight: not asked a second time
    deadline = time.monotonic() + 10
    while len(api.asked) < len(ids) and time.monotonic() < deadline:  # the pool's threads pick them up
        time.sleep(0.01)
    assert sorted(api.asked) == sorted(ids)
    api.release.set()
    reader._stats_pool.shutdown(wait=True)  # every sample asked has arrived
    shown = reader.usage_many(ids, budget=0.01)
    assert set(shown) == set(ids) and shown["c0"].memory_bytes == 50 * 2**20
    assert len(api.asked) == len(ids), "fresh samples are not asked again"


def test_a_stale_sample_is_shown_while_its_renewal_runs_in_the_background():
    api = HeldStats()
    api.release.set()
    reader = EngineReader(api)
    assert set(reader.usage_many(["c0"], budget=5)) == {"c0"}
    api.release.clear()  # the next tick comes 1 s later
    stamp, usage = reader._samples.get("c0")
    reader._samples.put("c0", (stamp - 60, usage))  # stale
    threading.Timer(1.0, api.release.set).start()
    shown = reader.usage_many(["c0"], budget=5)
    # Had the page waited for the renewal, it would have the new sample by now (released after 1 s).
    assert shown == {"c0": usage} and reader._samples.get("c0")[0] == stamp - 60
    assert "c0" in reader._sampling  # renewing in the background
    reader._stats_pool.shutdown(wait=True)
    assert reader._samples.get("c0")[0] > stamp - 60
