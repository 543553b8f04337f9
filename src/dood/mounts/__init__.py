"""Bind mounts: a path as Airflow sees it made into a bind source the host can resolve, and kept safe.

- `mount_map`: `DoodMount` (public as `dood.DoodMount`) and `MountMap`: every bind source through the mount map
  in force (the config's, checked against our own container's mounts).
- `source_safety`: a bind source nobody untrusted can re-point: every directory of the path checked with
  lstat (trusted owner, no foreign write), leaves made safely (`make_leaf`). dood-proxy imports it.
- `run_directories`: the directories a container writes (run directory, partition, model directory), made by
  dood-proxy (`/dood/v1/directories`, served by `dood.proxy.directory_api`) or, on the raw socket, here.
- `checkpoints`: a task instance's checkpoint directory (one per task instance, the same for every try on
  every host): its name, making it, removing it.

What a bind may name at all is the policy's (`dood.policy.binds`). Docs: docs/security.md.
"""
