"""docs/config.md says what the config models say: regenerate it when they change."""

from __future__ import annotations

from pathlib import Path

from dood.config.reference import render, rows

DOC = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def test_the_reference_page_matches_the_models():
    assert DOC.read_text() == render(), "docs/config.md is stale: python -m dood.config.reference > docs/config.md"


def test_every_key_is_listed_nested_ones_included():
    from dood.config.model import DoodConfig

    paths = [path for path, *_ in rows(DoodConfig)]
    assert set(DoodConfig.model_fields) <= set(paths)
    for key in ("policy.allowed_host_ips", "defaults.user", "pipelines.<name>.promotion.from_backfill", "stack"):
        assert key in paths
