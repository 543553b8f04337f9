"""dood's pages in Airflow's UI: the DooD nav page, a "Container" tab on task instances and a "Model metrics"
tab on pipeline DAGs, served by a FastAPI app the plugin registers (`dood.plugin.DoodPlugin`).

One concern per module: `access` (Airflow's login and DAG-level permissions), `reader` (read-only Docker calls
to one engine), `every_host` (every host's engine as one reader), `samples` (CPU and memory from the engine's
stats), `rows` (what a listed container shows), `task_states` and `metrics` (Airflow's database), `chart` (the
SVG), `links` (URLs into Airflow's UI), `render` (escaped HTML), `routes` (the endpoints) and `app` (the
FastAPI app); the pages' data: `overview` (the DooD page), `detail` (the Container tab), `checkpoint` (a task's
checkpoint directory, its host path and contents), `mlflow_links` (links to a step's and a DAG run's MLflow
runs), `problems` (an engine
that does not answer), `stopping` (stops under way), `workers` (which hosts have a live Celery worker, refreshed in the
background); `extra_link` (the "Container" button on a task).
"""
