"""dood-airflow: run ML pipeline steps as sibling Docker containers from Airflow 3, without DooD's traps.

The public names, each from the module that defines it (loaded on first use: importing `dood`, as the
provider entry point and dood-proxy do, imports neither Airflow nor the docker SDK). Public import paths
that stay: these names from `dood`; `dood.operators.container`, `dood.operators.pipeline_step`,
`dood.sensors.container`, `dood.triggers.container`, `dood.triggers.gpus` (trigger classpaths are stored by
Airflow), `dood.hooks.dood`, `dood.config.{DoodConfig, load_config}`, `dood.dag_factory`, `dood.exceptions`;
the commands `dood-proxy` (`python -m dood.proxy`), `dood-janitor`, `dood-gpus`, `python -m dood.hosts`.
The package map: docs/architecture.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dood.config.resources import Resources
    from dood.exceptions import (
        ContainerFailed,
        DockerUnreachable,
        DoodConfigError,
        DoodError,
        GpusBusy,
        GpusUnavailable,
    )
    from dood.hooks.dood import DoodHook
    from dood.lifecycle.completion import ContainerFailedNoRetry
    from dood.lifecycle.gone import ContainerGone
    from dood.mounts.mount_map import DoodMount
    from dood.operators.container import DoodContainerOperator
    from dood.operators.pipeline_step import PipelineStepOperator
    from dood.sensors.container import DoodContainerSensor
    from dood.triggers.container import DoodContainerTrigger

__version__ = "0.1.0"

#: Each public name, and the module that defines it.
_PUBLIC: dict[str, str] = {
    "DoodContainerOperator": "dood.operators.container",
    "PipelineStepOperator": "dood.operators.pipeline_step",
    "DoodContainerSensor": "dood.sensors.container",
    "DoodContainerTrigger": "dood.triggers.container",
    "DoodHook": "dood.hooks.dood",
    "DoodMount": "dood.mounts.mount_map",
    "Resources": "dood.config.resources",
    "ContainerFailed": "dood.exceptions",
    "ContainerFailedNoRetry": "dood.lifecycle.completion",
    "ContainerGone": "dood.lifecycle.gone",
    "DockerUnreachable": "dood.exceptions",
    "DoodConfigError": "dood.exceptions",
    "DoodError": "dood.exceptions",
    "GpusBusy": "dood.exceptions",
    "GpusUnavailable": "dood.exceptions",
}

#: Explicit, for type checkers and `from dood import *`; a test keeps it equal to `_PUBLIC` and `__version__`.
__all__ = [
    "ContainerFailed",
    "ContainerFailedNoRetry",
    "ContainerGone",
    "DockerUnreachable",
    "DoodConfigError",
    "DoodContainerOperator",
    "DoodContainerSensor",
    "DoodContainerTrigger",
    "DoodError",
    "DoodHook",
    "DoodMount",
    "GpusBusy",
    "GpusUnavailable",
    "PipelineStepOperator",
    "Resources",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'dood' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
