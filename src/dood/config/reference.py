"""The config reference (docs/config.md), generated from the pydantic models that validate the config.

The models are the documentation: every key's type, default and description live in one place, and a
unit test fails when docs/config.md no longer says what they say. Regenerate with
`python -m dood.config.reference > docs/config.md`.
"""

from __future__ import annotations

import json
import os
import sys
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HEADER = """# Configuration reference

Generated from the models in `dood.config.model` by `python -m dood.config.reference > docs/config.md`; a unit test
fails when this page and the models disagree. One file, shared by every process: the file named by
`$DOOD_CONFIG`, else `config/dood.yaml` in the working directory; with neither, the defaults (each process logs
once which file it read, or that it found none). `${VAR}` references are expanded from the environment. A bad
value fails with the field's path and what it accepts.
"""


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The model a field holds (itself, or inside Optional/list/dict), when it holds one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _type_name(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg] # one taking the data raises TypeError
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(see below)"
        return f"`{json.dumps(value, default=str)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default, default=str)}`"


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key path, type, default, description) of every field, nested models after their parent."""
    nested = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        child = _model_of(field.annotation)
        description = field.description or (child.__doc__ or "").split("\n\n")[0] if child else field.description
        description = " ".join((description or "").split())
        yield path, _type_name(field.annotation), _default(field), description.replace("|", "\\|")
        if child is not None:
            is_map = typing.get_origin(field.annotation) is dict
            nested.append((child, f"{path}.<name>." if is_map else f"{path}."))
    for child, child_prefix in nested:
        yield from rows(child, child_prefix)


#: Variables some defaults are read from: the reference shows the defaults of a clean environment.
ENVIRONMENT_DEFAULTS = ("DOOD_STACK", "DOCKER_HOST")


def render() -> str:
    from dood.config.model import DoodConfig

    saved = {name: os.environ.pop(name) for name in ENVIRONMENT_DEFAULTS if name in os.environ}
    try:
        table = [f"| `{path}` | {kind} | {default} | {text} |" for path, kind, default, text in rows(DoodConfig)]
    finally:
        os.environ.update(saved)
    return "\n".join([HEADER, "| Key | Type | Default | Meaning |", "|---|---|---|---|", *table]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
