"""DoodHook: the provider's DockerHook (connection, TLS, registry login) plus what DooD needs on top:
inspecting our own container to discover the mount map, and finding containers by labels."""

from __future__ import annotations

import re
import socket
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.docker.hooks.docker import DockerHook
from airflow.sdk.exceptions import AirflowException
from docker.errors import APIError, NotFound

from dood.engine.client_tls import tls_config
from dood.engine.reconnect import explain_unreachable
from dood.exceptions import DockerUnreachable, DoodConfigError
from dood.mounts.mount_map import MountMap, mount_map_in_force
from dood.mounts.run_directories import HostDirectories, proxy_info
from dood.naming import HOST_LABEL, MANAGED_LABEL, STACK_LABEL

if TYPE_CHECKING:
    from docker import APIClient

    from dood.config.model import DoodConfig

_HOST_CPUS: dict[str, int | None] = {}  # Docker endpoint -> its CPU count
_API_VERSION: dict[str, str] = {}  # Docker endpoint -> the API version `api_version: auto` negotiated there
_OWN_CONTAINER: dict[str, dict[str, Any] | None] = {}  # Docker endpoint -> inspect of our container, or None
_CONTAINER_ID_IN_MOUNTINFO = re.compile(r"/containers/([0-9a-f]{64})/")


def own_container_candidates() -> list[str]:
    """Ids or names that may designate our own container: the full id from mountinfo, then the hostname."""
    candidates: list[str] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            candidates.extend(dict.fromkeys(_CONTAINER_ID_IN_MOUNTINFO.findall(handle.read())))
    except OSError:
        pass
    candidates.append(socket.gethostname())
    return candidates


class DoodHook(DockerHook):
    """Docker connection for dood, configured from the shared config's `docker` section."""

    hook_name = "Docker (dood)"

    def __init__(self, config: DoodConfig, *, answered_before: bool = False) -> None:
        """`answered_before`: this daemon answered earlier in this task (a deferred task's resume), so a
        missing socket is reported as a restart, not as a socket never mounted."""
        endpoint = config.docker
        # one TLS rule for every dood process; its CA not replaced by $REQUESTS_CA_BUNDLE
        tls = tls_config(endpoint.tls_ca_cert, endpoint.tls_client_cert, endpoint.tls_client_key)
        version = endpoint.api_version
        if version == "auto":  # negotiated once per endpoint and process (`api`), not on every launch
            version = _API_VERSION.get(endpoint.url, version)
        super().__init__(
            docker_conn_id=endpoint.conn_id,
            base_url=endpoint.url,
            version=version,
            tls=tls,
            timeout=endpoint.timeout_seconds,
        )
        self.config = config
        self.answered_before = answered_before

    @property
    def api(self) -> APIClient:
        """The Docker API client; when no daemon answers, a DockerUnreachable saying why and how to fix it."""
        if "api_client" in self.__dict__:  # made (and pinged) already
            return self.api_client
        try:
            client = self.api_client
        except AirflowException as exc:  # DockerHook's "no daemon answers"
            url = self.config.docker.url
            raise DockerUnreachable(explain_unreachable(url, answered_before=self.answered_before)) from exc
        self._settle(client)
        return client

    def _settle(self, client: APIClient) -> None:
        """What need not be redone on every launch (each builds a hook), once per client:

        - `api_version: auto` costs a `GET /version` per client; the version it found is kept per endpoint and
          process, so later hooks skip it (a daemon's API version changes only when it is replaced; an upgraded
          one still speaks the older version, a downgraded one would need this process restarted; every hook
          still pings it).
        - On a unix socket, requests would read proxies and .netrc from the environment on every request
          (~1 ms each); none of them applies to a socket (docker-py ignores proxies there), so it does not.
        """
        url = self.config.docker.url
        if self.config.docker.api_version == "auto":
            _API_VERSION.setdefault(url, client.api_version)
        if url.startswith("unix://"):
            client.trust_env = False

    def inspect_own_container(self) -> dict[str, Any] | None:
        """`docker inspect` of the container this process runs in, if the daemon we talk to runs it."""
        hostname = socket.gethostname()
        for candidate in own_container_candidates():
            try:
                found = self.api.inspect_container(candidate)
            except NotFound:
                continue
            except APIError as exc:
                if exc.status_code != 403:
                    raise
                raise DoodConfigError(
                    f"{self.config.docker.url} refuses to inspect our own container ({exc.explanation}). Behind "
                    "dood-proxy, start it with --inspectable-label and label the Airflow containers with it, or "
                    "set mount_discovery.mode: off and list the mount_map (docs/security.md)."
                ) from None
            if found["Config"].get("Hostname") == hostname:  # a same-named stranger is not us
                return found
        return None

    @cached_property
    def mount_map(self) -> MountMap:
        """The mount map in force (`dood.mounts.mount_map.mount_map_in_force`): the config, checked against what our
        own container really mounts when `mount_discovery` says so."""
        return mount_map_in_force(
            self.config.mount_map,
            self.config.mount_discovery.mode,
            self._own_container,
            own_container_candidates,
        )

    def _own_container(self) -> dict[str, Any] | None:
        """Our own container's inspect, asked once per endpoint and process: it does not change while we run."""
        url = self.config.docker.url
        if url not in _OWN_CONTAINER:
            _OWN_CONTAINER[url] = self.inspect_own_container()
        return _OWN_CONTAINER[url]

    @cached_property
    def directories(self) -> HostDirectories:
        """Makes the directories containers write: through dood-proxy when it is the endpoint, else here."""
        through_proxy = proxy_info(self.api, self.config.docker.url) is not None
        return HostDirectories(self.api, self.config.policy, self.mount_map, through_proxy=through_proxy)

    @cached_property
    def stack(self) -> str:
        """The deployment whose containers this process may see and touch: dood-proxy's own when Docker
        is reached through it (it forces that label), else the config's `stack`."""
        info = proxy_info(self.api, self.config.docker.url) or {}
        return str(info.get("stack") or self.config.stack)

    @property
    def host_cpus(self) -> int | None:
        """The Docker host's CPU count, asked once per endpoint and process (not on every launch)."""
        url = self.config.docker.url
        if url not in _HOST_CPUS:
            _HOST_CPUS[url] = self.api.info().get("NCPU")
        return _HOST_CPUS[url]

    def scope_labels(self) -> dict[str, str]:
        """The labels of every container this process may see and touch: dood's, of this stack, and of this
        Docker host when the deployment has several ($DOOD_HOST: label dood.host)."""
        scope = {MANAGED_LABEL: "true", STACK_LABEL: self.stack}
        if self.config.host is not None:
            scope[HOST_LABEL] = self.config.host
        return scope

    def owns(self, labels: dict[str, str]) -> bool:
        """Whether a container with these labels is in this process's scope (`scope_labels`)."""
        return all(labels.get(key) == value for key, value in self.scope_labels().items())

    def find_containers(self, labels: dict[str, str], *, include_stopped: bool = True) -> list[dict[str, Any]]:
        """Containers of this stack (and host) carrying all these labels (`docker ps --filter label=...`)."""
        labels = {**labels, **self.scope_labels()}
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        return self.api.containers(all=include_stopped, filters=filters)
