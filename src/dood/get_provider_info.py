"""Provider metadata, read by Airflow through the `apache_airflow_provider` entry point."""

from __future__ import annotations

from dood import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "dood-airflow",
        "name": "dood (Docker-out-of-Docker)",
        "description": "Run pipeline steps as sibling containers through the host's Docker socket.",
        "versions": [__version__],
        "operators": [
            {
                "integration-name": "dood",
                "python-modules": ["dood.operators.container", "dood.operators.pipeline_step"],
            },
        ],
        "hooks": [
            {"integration-name": "dood", "python-modules": ["dood.hooks.dood"]},
        ],
        "sensors": [
            {"integration-name": "dood", "python-modules": ["dood.sensors.container"]},
        ],
        "triggers": [
            {"integration-name": "dood", "python-modules": ["dood.triggers.container", "dood.triggers.gpus"]},
        ],
        # Registered, so the api-server (which never imports operators) can show the link (dood.ui).
        "extra-links": ["dood.ui.extra_link.DoodContainerLink"],
        "integrations": [
            {"integration-name": "dood", "external-doc-url": "https://github.com/dood-airflow/dood-airflow"},
        ],
    }
