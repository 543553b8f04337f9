"""Sizes such as '512m' or '4g', read exactly as the docker SDK reads them, without importing it.

The policy (and so dood-proxy) validates `max_memory` with this; the proxy never needs the docker SDK.
`tests/unit/policy/test_sizes.py` checks it against `docker.utils.parse_bytes` on many inputs.
"""

from __future__ import annotations

#: The docker SDK's units: binary multiples, one letter, case-insensitive.
UNITS = {"b": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}


def parse_bytes(text: str | int | float) -> int | float:
    """`docker.utils.parse_bytes`: a number is returned as is; '4g', '4gb', '4G' and '4096' are read the
    SDK's way (a trailing 'b' after a unit letter dropped, no unit meaning bytes, the digits read as a float)."""
    if isinstance(text, (int, float)):
        return text
    if len(text) == 0:
        return 0
    if text[-2:-1].isalpha() and text[-1].isalpha() and text[-1] in "bB":
        text = text[:-1]
    suffix = text[-1].lower()
    if suffix.isdigit():
        digits, suffix = text, "b"
    else:
        digits = text[:-1]
    if suffix not in UNITS:
        raise ValueError(
            f"The specified value for memory ({text}) should specify the units. "
            "The postfix should be one of the `b` `k` `m` `g` characters"
        )
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"Failed converting the string value for memory ({digits}) to an integer.") from None
    return int(number * UNITS[suffix])


def parse_size(value: int | str | None) -> int | None:
    """Bytes from an int or a size such as '512m' / '4g'; a ValueError names the fix."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be a size such as '512m' or '4g', not a boolean")
    try:
        parsed = parse_bytes(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; use bytes or a size such as '512m' or '4g'") from None
    if parsed <= 0:
        raise ValueError("must be a positive size such as '512m' or '4g'")
    return int(parsed)
