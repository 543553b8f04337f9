"""dood-proxy: a reverse proxy in front of the Docker socket that only lets dood touch its own containers.

Run it with the raw socket mounted into it alone, and point Airflow at it (`docker.url`):

    python -m dood.proxy --listen unix:///run/dood/docker.sock --upstream unix:///var/run/docker.sock \
        --config config/dood.yaml

Modules, one concern each: `wire` (HTTP/1.1 on streams), `allow_list` (which calls pass, and how they are
rewritten), `ownership` (is this container ours), `identity` (who a created container is: its user, groups,
labels and name), `gpus` (no two containers share a GPU, the engine-wide claim lock), `directory_api` (the
directories endpoint, `/dood/v1/directories`), `listener` (listening sockets: how many connections anyone who
reaches a port may hold, and for how long), `readonly` (the UI's listener), `relay` (streams), `server_tls`
(mutual TLS), `daemon` (reaching the real socket), `server` (wiring).
The container policy itself is `dood.policy`, shared with the operator. See docs/security.md.
"""

from __future__ import annotations
