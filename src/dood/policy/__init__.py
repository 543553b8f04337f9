"""The container policy: what a launched container may ask of the Docker host, checked in one place.

- `model`: the typed `Policy` (`policy:` in the dood config), with `images` (references and patterns) and
  `paths` (cleaned host paths, the system paths) it is written in.
- `body`: the strict JSON parser and the canonical form of a create body as Go's decoder reads it.
- `rules`: `violations(create_body, policy)`, one pure function over that body, and `check` for a task;
  with `binds` (host paths, volumes) and `devices` (devices, GPUs) as their own modules, and `problems` (what every
  rule shares: the violations list, Go's reading of "set").
- `sizes`: byte sizes (`512m`, `2g`) read as docker's `parse_bytes` reads them, pinned to it by a test.

The operator checks the body it is about to send; dood-proxy checks every create body on the socket and
forwards the canonical form it checked. Importing this package imports neither Airflow nor the docker SDK
(the proxy runs without them). The `policy:` section is loaded by `dood.config.load_config(section="policy")`.
"""

from __future__ import annotations

from dood.policy.binds import SHARED_PROPAGATIONS
from dood.policy.body import STRUCTURAL_RULES, MalformedBody, Violation, canonical_create_body, parse_json
from dood.policy.devices import BLKIO_DEVICE_FIELDS, GPU_ENV_PREFIX
from dood.policy.images import ANY_IMAGE, ImageReference
from dood.policy.model import ESCAPE_CAPABILITIES, Policy, capability_name
from dood.policy.paths import SYSTEM_PATHS, clean_path, system_path_conflict
from dood.policy.rules import (
    ALLOWED_IPC_MODES,
    ALLOWED_LOG_DRIVERS,
    ALLOWED_RUNTIMES,
    ALLOWED_SECURITY_OPTS,
    PolicyViolation,
    apply_defaults,
    check,
    violations,
)

__all__ = [
    "ALLOWED_IPC_MODES",
    "ALLOWED_LOG_DRIVERS",
    "ALLOWED_RUNTIMES",
    "ALLOWED_SECURITY_OPTS",
    "ANY_IMAGE",
    "BLKIO_DEVICE_FIELDS",
    "ESCAPE_CAPABILITIES",
    "GPU_ENV_PREFIX",
    "SHARED_PROPAGATIONS",
    "STRUCTURAL_RULES",
    "SYSTEM_PATHS",
    "ImageReference",
    "MalformedBody",
    "Policy",
    "PolicyViolation",
    "Violation",
    "apply_defaults",
    "canonical_create_body",
    "capability_name",
    "check",
    "clean_path",
    "parse_json",
    "system_path_conflict",
    "violations",
]
