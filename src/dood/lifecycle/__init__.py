"""One launched container's life, from create to removal: what `pod_manager` is to the Kubernetes provider.

The operator, the sensor and the trigger all go through these modules; none of them imports Airflow's
operator machinery, and this `__init__` imports nothing.

- `launch`: `ContainerLauncher`, the spec made real: image, create (never a 409), start, attach, wait.
- `follow`: the blocking wait to the end across daemon restarts; `logs`: output into the task log, inert and
  bounded; `results`: the result file read without following links.
- `completion`: how the container's end becomes the task's: the deadline, the trigger's event (`resume`),
  logs, outcome, result, skip / fail / fail-without-retry, removal.
- `outcome`: `Outcome`, the one event shape the trigger sends and the operator and sensor read, with
  `gone` (removed before its outcome was read) and `docker_time` (Docker's times) beside it.
- `teardown`: `discard` (stop with grace, then remove), run by `python -m dood.lifecycle.teardown` in a process
  that outlives the killed task.
- `owning_try`: may this try still end its container (`end_if_owner`); `adoption`: which earlier try's
  container a retry takes over; `handoff`: the `dood.handoff` label of a container started with `wait=False`.
- `checkpoint`: what a try does with its checkpoint directory (`checkpoint=True`): mount it, say what is in
  it, finish it when the task succeeds.
- `mlflow_runs`: a try's MLflow runs (the DAG run's parent, the task instance's step run that every try
  continues), with MLflow's client imported only when tracking is configured.

How a container is reached is `dood.engine`; its bind mounts are `dood.mounts`; its GPUs `dood.gpus`.
Docs: docs/lifecycle.md.
"""
