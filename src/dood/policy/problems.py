"""What every rule shares: a list of violations to add to, and Go's reading of "set" and of lists."""

from __future__ import annotations

from typing import Any

from dood.policy.body import Violation


class Problems(list):
    """The violations one rule found."""

    def add(self, field: str, rule: str, message: str) -> None:
        self.append(Violation(field, rule, message))


def as_list(value: Any, field: str, found: Problems, *, string_ok: bool = False) -> list[Any]:
    """`value` as a JSON array (null: empty; a string when `string_ok`: one element); else a malformed one."""
    if value is None:
        return []
    if string_ok and isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    found.add(field, "malformed", "must be a JSON array")
    return []


def is_set(value: Any) -> bool:
    """Whether a field asks for something (Go's zero values and null ask for nothing)."""
    return value not in (None, False, 0, "", [], {})
