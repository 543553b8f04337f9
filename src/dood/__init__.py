"""dood-airflow: run ML pipeline steps as sibling Docker containers from Airflow 3, without DooD's traps."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = [
    "DoodContainerOperator",
    "DoodContainerSensor",
    "DoodContainerTrigger",
    "DoodHook",
    "DoodMount",
    "Resources",
    "__version__",
]


def __getattr__(name: str):
    # Lazy: importing `dood` (e.g. from the provider entry point) must not import Airflow's operator machinery.
    if name == "DoodContainerOperator":
        from dood.operators.container import DoodContainerOperator

        return DoodContainerOperator
    if name == "DoodContainerSensor":
        from dood.sensors.container import DoodContainerSensor

        return DoodContainerSensor
    if name == "DoodContainerTrigger":
        from dood.triggers.container import DoodContainerTrigger

        return DoodContainerTrigger
    if name == "DoodHook":
        from dood.hooks.dood import DoodHook

        return DoodHook
    if name == "DoodMount":
        from dood.mounts.mount_map import DoodMount

        return DoodMount
    if name == "Resources":
        from dood.config.resources import Resources

        return Resources
    raise AttributeError(f"module 'dood' has no attribute {name!r}")
