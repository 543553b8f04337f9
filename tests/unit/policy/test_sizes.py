"""Sizes: dood's parser reads every size exactly as the docker SDK's `parse_bytes` does (the SDK only here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from docker.errors import DockerException
from docker.utils import parse_bytes as docker_parse_bytes

from dood.policy.sizes import parse_bytes, parse_size

# fmt: off
SIZES = [
    # plain numbers, as text and not
    "0", "1", "6", "512", "4096", "07", "1.5", ".5", "5.", "-1", "-4g", "+4g", "1e3", "1E3k", "1_000", "1_0k",
    0, 1, 4096, -5, 1.5, 0.0, 10**12,
    # every unit, both cases, with and without a trailing b
    "1b", "1B", "1k", "1K", "1kb", "1KB", "1kB", "1Kb", "2m", "2M", "2mb", "2MB", "3g", "3G", "3gb", "3GB",
    "0.5g", "1.25m", "0.001k", "16g", "512m", "4g", "6m", "6291456",
    # units docker does not know, and what it makes of them
    "1t", "1tb", "1p", "1kib", "1KiB", "1 g", " 1g", "1g ", "1\tg", "g", "gb", "b", "bb", "1bb", "1gbb", "k",
    "4x", "lots", "nan", "nank", "inf", "-inf", "infk", "-infg", "1e999", "1e400m",
    "abc", "1.2.3g", "0x10", "0x10k", "1e", "1ek", "--1g",
    # non-ASCII digits and letters: Python's float and str methods accept some of them
    "\u0663", "\u0663k", "\u00b2", "1\u00b2", "\uff11g", "1\u0131", "1\u212a", "\u0130",
    "",
]
# fmt: on


def _docker(value):
    try:
        return ("ok", docker_parse_bytes(value))
    except DockerException as exc:
        return ("refused", str(exc))
    except (ValueError, OverflowError, AttributeError, TypeError) as exc:
        return (type(exc).__name__, str(exc))


def _ours(value):
    try:
        return ("ok", parse_bytes(value))
    except ValueError as exc:
        # docker's refusals are DockerException; ours are ValueError with the same text
        return ("refused" if "memory" in str(exc) else "ValueError", str(exc))
    except (OverflowError, AttributeError, TypeError) as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("value", SIZES, ids=repr)
def test_parse_bytes_reads_every_size_as_the_docker_sdk_does(value):
    assert _ours(value) == _docker(value)


def test_the_comparison_covers_sizes_read_refused_and_crashing():
    kinds = {_docker(value)[0] for value in SIZES}
    assert {"ok", "refused", "ValueError", "OverflowError"} <= kinds


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("512m", 512 * 1024**2), ("4g", 4 * 1024**3), (4096, 4096), ("1.5k", 1536)],
)
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "not a boolean"),
        ("0", "positive"),
        ("-4g", "positive"),
        ("lots", "should specify the units.*use bytes or a size"),
        ("1.2.3g", "Failed converting.*use bytes or a size"),
    ],
)
def test_parse_size_refusals_name_the_fix(value, message):
    with pytest.raises(ValueError, match=message):
        parse_size(value)


def test_the_proxy_and_the_policy_import_neither_the_docker_sdk_nor_airflow():
    code = (
        "import sys, dood.policy, dood.config.model, dood.proxy.server, dood.proxy.__main__; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'airflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
