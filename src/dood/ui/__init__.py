"""dood's pages in Airflow's UI: the DooD nav page, a "Container" tab on task instances and a "Model metrics"
tab on pipeline DAGs, served by a FastAPI app the plugin registers (`dood.plugin.DoodPlugin`).

One concern per module: `access` (Airflow's login and DAG-level permissions), `engine` (read-only Docker
calls), `samples` (CPU and memory from the engine's stats), `rows` (what a listed container shows),
`task_states` and `metrics` (Airflow's database), `chart` (the SVG), `links` (URLs into Airflow's UI),
`render` (escaped HTML), `routes` (the endpoints) and `app` (the FastAPI app).
"""
