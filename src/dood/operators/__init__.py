"""Operators: `DoodContainerOperator` (one step as a sibling container) and `PipelineStepOperator` (a
configured pipeline's step).

- `container`: the operator (spec, launch, wait, kill); `gpu_waiting`: its deferral while GPUs are busy.
- `pipeline_step`: a step of a configured pipeline, writing in its run's partition (`partition`).
- `assets`: a pipeline's Airflow assets at run time (the events that started a run, promote's model event).
- `tracking`: `TracksInMlflow`, the operator's half of MLflow tracking (`dood.lifecycle.mlflow_runs`).
- `arguments`: argument validation shared with the sensor (fail at DAG-parse time, naming the field).
"""
