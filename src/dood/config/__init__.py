"""The dood config (`config/dood.yaml`): typed models that are also its documentation, and its one loader.

- `model`: `DoodConfig` and its sections, `load_config` (the whole file or one section), `parse_config`.
- `endpoints`: how a Docker daemon is reached (`DockerEndpoint`, `HostEndpoint`), the hosts (`Host`) and the
  mount map's entries (`MountMapEntry`): the part of the model placement needs, importing nothing of dood.
- `pipelines`: pipelines and their steps; `placement`: which hosts a step may run on, its queue and pool (pure,
  imports only `endpoints` and `pipelines`); `resources`: a container's resource limits;
  `gpu_inventory`: a host's GPUs (`gpus:`); `tracking`: where steps log to MLflow (`tracking: mlflow:`).
- `file`: which file is in force ($DOOD_CONFIG, else `config/dood.yaml`, else the defaults), read once.
- `reference`: docs/config.md, generated from the models (`python -m dood.config.reference`).

`from dood.config import DoodConfig, load_config` is the public path (loaded on first use, so importing a
submodule such as `dood.config.file` stays cheap). The policy section is `dood.policy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dood.config.model import DoodConfig, load_config

__all__ = ["DoodConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dood.config import model

        return getattr(model, name)
    raise AttributeError(f"module 'dood.config' has no attribute {name!r}")
