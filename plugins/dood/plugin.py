"""Airflow plugin registration (entry point `airflow.plugins`), so `airflow plugins` lists dood."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class DoodPlugin(AirflowPlugin):
    name = "dood"
