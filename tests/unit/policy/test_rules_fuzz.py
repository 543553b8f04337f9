"""The pure policy against the fuzz invariants, without Docker: every generated create body that
`dood.policy.violations` allows, in the canonical form dood-proxy forwards (with the policy's defaults
applied), holds to the invariants the integration fuzz checks on the daemon's inspect
(tests/create_fuzz.py; tests/integration/test_proxy_fuzz.py). The corpus is replayed first.

Hypothesis shrinks a failure to a small body here, which the integration test cannot afford to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from dood.policy import MalformedBody, Policy, apply_defaults, canonical_create_body, parse_json, violations
from tests.create_fuzz import Expect, FuzzPolicy, as_daemon_reads, broken_invariants, create_bodies

CORPUS = Path(__file__).parents[2] / "integration" / "fuzz_corpus"
FUZZ = FuzzPolicy(data="/srv/dood-fuzz/data")
POLICY = Policy(**FUZZ.policy_kwargs())
EXPECT = Expect(policy=FUZZ, through_proxy=False)


def broken_if_allowed(template: str) -> list[str] | None:
    """None when the policy refuses the body; else the invariants its canonical form breaks."""
    try:
        parsed = parse_json(FUZZ.fill(template, "unit"))
    except MalformedBody:
        return None
    if violations(parsed, POLICY):
        return None
    canonical, _ = canonical_create_body(parsed)
    apply_defaults(canonical, POLICY)
    return broken_invariants(as_daemon_reads(json.loads(json.dumps(canonical))), EXPECT)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.json")), ids=lambda path: path.stem)
def test_the_corpus_holds(path):
    body = json.loads(path.read_text())["body"]
    assert not broken_if_allowed(body), body


@settings(
    max_examples=500, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(create_bodies())
def test_every_body_the_policy_allows_holds_to_the_invariants(generated):
    template, _ = generated
    broken = broken_if_allowed(template)
    assert not broken, f"{template}\nbroke:\n" + "\n".join(broken or ())
