"""Which dood config file is in force, read once: $DOOD_CONFIG, else a documented default, else none.

The lookup is explicit and logged: every process says once which file it reads, or that it found none and
runs on the defaults. Validation is `dood.config.model`'s (`load_config`, the whole config or one section).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from dood.exceptions import DoodConfigError

log = logging.getLogger(__name__)

CONFIG_ENV_VAR = "DOOD_CONFIG"
#: Where the config is looked for when $DOOD_CONFIG is unset: `config/dood.yaml` under the working directory
#: (a checkout's root, where `make demo` and the CLIs run). Absent there too: no config file, the defaults.
DEFAULT_CONFIG_PATH = Path("config") / "dood.yaml"

_announced: set[str] = set()


def config_path() -> Path:
    """The config file to read: $DOOD_CONFIG, else `config/dood.yaml` in the working directory."""
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def read_config_file(path: str | os.PathLike[str] | None = None) -> tuple[Mapping[str, Any], str]:
    """The file's top-level mapping (`${VAR}` expanded) and its name. A file that was asked for (`path`, or
    $DOOD_CONFIG) must exist; without either and without the default file: empty, the defaults apply."""
    explicit = bool(path) or CONFIG_ENV_VAR in os.environ
    resolved = Path(path) if path else config_path()
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise DoodConfigError(
                f"Cannot read the dood config {resolved}: not found. Create it (see config/dood.yaml in the "
                f"project) or point ${CONFIG_ENV_VAR} at it."
            ) from None
        _announce(
            "",
            logging.WARNING,
            "No dood config file: defaults ($%s unset, no %s in %s)",
            CONFIG_ENV_VAR,
            resolved,
            Path.cwd(),
        )
        return {}, "<defaults>"
    except OSError as exc:
        raise DoodConfigError(f"Cannot read the dood config {resolved}: {exc}") from None
    try:
        data = copy.deepcopy(_parsed_yaml(os.path.expandvars(text)))  # a copy: no caller can change the cache
    except yaml.YAMLError as exc:
        raise DoodConfigError(f"Invalid dood config {resolved}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise DoodConfigError(f"Invalid dood config {resolved}: expected a mapping at the top")
    _announce(str(resolved.resolve()), logging.INFO, "dood config file: %s", resolved.resolve())
    return data, str(resolved)


@lru_cache(maxsize=8)
def _parsed_yaml(text: str) -> Any:
    """The YAML of a config text, parsed once per process: every task launch reads the config, and parsing
    (pure-Python YAML, several ms) costs more than reading. Keyed by the text itself, `${VAR}` already
    expanded, so an edited file or a changed variable is parsed anew, never served stale."""
    return yaml.safe_load(text)


def _announce(key: str, level: int, message: str, *args: object) -> None:
    """Log once per process which config file is in force, or that none is."""
    if key not in _announced:
        _announced.add(key)
        log.log(level, message, *args)
