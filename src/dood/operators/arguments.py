"""Validation of operator and sensor arguments: fail at DAG-parse time, naming the field and the fix."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, get_args

from pydantic import ValidationError

from dood.config.resources import Resources
from dood.exceptions import DoodConfigError


def validated_resources(resources: Resources | Mapping[str, Any] | None, task_id: str) -> Resources:
    if isinstance(resources, Resources):
        return resources
    try:
        return Resources.model_validate(resources or {})
    except ValidationError as exc:
        problems = "; ".join(f"resources.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DoodConfigError(f"{task_id}: {problems}") from None


def one_of(value: str | None, allowed_type: Any, field: str, task_id: str) -> Any:
    allowed = get_args(allowed_type)
    if value is not None and value not in allowed:
        raise DoodConfigError(f"{task_id}: {field}={value!r} is not one of {list(allowed)}")
    return value


def exit_codes(codes: int | Iterable[int] | None, task_id: str) -> frozenset[int]:
    if codes is None:
        return frozenset()
    values = [codes] if isinstance(codes, int) else list(codes)
    if not all(isinstance(code, int) and 0 < code < 256 for code in values):
        raise DoodConfigError(f"{task_id}: skip_on_exit_code must be exit codes 1-255, got {codes!r}")
    return frozenset(values)
