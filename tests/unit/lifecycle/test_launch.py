"""One container's life (dood.lifecycle.launch) against a stand-in for the Docker API: pull policy, create without a
409 (a leftover of this very try is removed, anything else refused), the create body, and the outcome.

Only the API calls that would reach the engine are stood in for; the bodies are built by the docker SDK's own
APIClient (an explicit version makes no connection)."""

from __future__ import annotations

import docker
import pytest
from docker.errors import APIError, ImageNotFound, NotFound

from dood.config.resources import Resources
from dood.exceptions import DoodConfigError, DoodError, ForeignContainerError, ImageUnavailable
from dood.lifecycle.launch import ContainerLauncher, ContainerSpec
from dood.lifecycle.outcome import Outcome
from dood.naming import MANAGED_LABEL, TaskIdentity

SDK = docker.APIClient(version="1.41")
IDENTITY = TaskIdentity(dag_id="dag", task_id="train", run_id="manual__1", try_number=2)


class _Response:
    status_code = 409
    reason = "Conflict"

    def json(self):
        return {"message": "Conflict. The container name is already in use"}


class FakeApi:
    """The calls the launcher makes, recorded; containers by name, images by reference."""

    create_host_config = SDK.create_host_config
    create_container_config = SDK.create_container_config

    def __init__(self, *, images=(), containers=None, pull_events=(), pull_error=None):
        self.images = set(images)
        self.containers = dict(containers or {})
        self.pull_events = list(pull_events)
        self.pull_error = pull_error
        self.calls: list[tuple] = []

    def inspect_image(self, image):
        self.calls.append(("inspect_image", image))
        if image not in self.images:
            raise ImageNotFound(image)
        return {"Id": image}

    def pull(self, repository, tag, stream, decode):
        self.calls.append(("pull", repository, tag))
        if self.pull_error is not None:
            raise self.pull_error
        return iter(self.pull_events)

    def create_container_from_config(self, body, name):
        self.calls.append(("create", name))
        if name in self.containers:
            raise APIError("conflict", response=_Response())
        self.containers[name] = {"Id": f"id-{name}", "Config": {"Labels": body.get("Labels")}, "State": {}}
        return {"Id": f"id-{name}"}

    def inspect_container(self, name):
        self.calls.append(("inspect_container", name))
        if name not in self.containers:
            raise NotFound(name)
        return self.containers[name]

    def remove_container(self, container_id, **kwargs):
        self.calls.append(("remove", container_id))
        self.containers = {n: c for n, c in self.containers.items() if c["Id"] != container_id}


def _spec(**fields) -> ContainerSpec:
    return ContainerSpec(identity=IDENTITY, image="dood-test-busybox:latest", command=["true"], **fields)


def _existing(status: str, labels: dict | None) -> dict:
    return {"Id": "old", "Config": {"Labels": labels}, "State": {"Status": status}}


# --- images ---


def test_a_present_image_is_not_pulled_unless_always():
    api = FakeApi(images={"img:1"})
    ContainerLauncher(api).ensure_image("img:1", "if_not_present")
    ContainerLauncher(api).ensure_image("img:1", "never")
    assert [c[0] for c in api.calls] == ["inspect_image", "inspect_image"]
    ContainerLauncher(api).ensure_image("img:1", "always")
    assert api.calls[-1] == ("pull", "img", "1")


def test_a_missing_image_is_pulled_or_refused_by_the_policy():
    api = FakeApi()
    ContainerLauncher(api).ensure_image("registry.example.com:5000/ml/img", "if_not_present")
    assert api.calls[-1] == ("pull", "registry.example.com:5000/ml/img", "latest")
    with pytest.raises(DoodConfigError, match="pull_policy is 'never'"):
        ContainerLauncher(FakeApi()).ensure_image("img:1", "never")
    failing = FakeApi(pull_events=[{"status": "Pulling"}, {"error": "manifest unknown"}])
    with pytest.raises(
        ImageUnavailable, match=r"image: 'img:1' is not on the Docker host and pulling it failed \(manifest"
    ):
        ContainerLauncher(failing).ensure_image("img:1", "if_not_present")


class _Refused:
    status_code = 500
    reason = "Internal Server Error"


def test_a_pull_the_daemon_refuses_names_the_image_the_cause_and_the_fixes():
    cause = 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'
    refused = APIError("500 Server Error for .../images/create", response=_Refused(), explanation=cause)
    api = FakeApi(pull_error=refused)
    with pytest.raises(ImageUnavailable) as caught:
        ContainerLauncher(api).ensure_image("dood-ml-exampel:latest", "if_not_present")
    message = str(caught.value)
    assert isinstance(caught.value, DoodConfigError) and caught.value.image == "dood-ml-exampel:latest"
    assert message.startswith("image: 'dood-ml-exampel:latest' is not on the Docker host and pulling it failed")
    assert cause in message and "images/create" not in message  # Docker's cause, not its URL
    assert "docker build -t dood-ml-exampel:latest" in message and "check the image name and tag" in message
    assert "`docker.conn_id`" in message and "Nothing was created" in message
    assert [call[0] for call in api.calls] == ["inspect_image", "pull"]  # nothing created
    with pytest.raises(ImageUnavailable, match="could not be pulled"):
        ContainerLauncher(FakeApi(images={"img:1"}, pull_error=refused)).ensure_image("img:1", "always")


# --- the create body ---


def test_the_create_body_is_the_one_sent_and_carries_identity_and_hardening():
    spec = _spec(
        user="1000:1000",
        labels={"team": "ml"},
        environment={"A": "1"},
        resources=Resources(cpus=1, memory="1g"),
        network="bridge",
    )
    body = ContainerLauncher(FakeApi()).create_body(spec)
    assert body["Image"] == "dood-test-busybox:latest" and body["User"] == "1000:1000"
    assert body["Labels"] == {"team": "ml", **IDENTITY.labels()}
    assert body["Env"] == ["A=1"]
    host = body["HostConfig"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and not host.get(
        "AutoRemove"
    )  # removed by us, after the outcome
    assert (host["NanoCpus"], host["Memory"], host["NetworkMode"]) == (10**9, 1024**3, "bridge")


def test_identity_labels_win_over_user_labels():
    spec = _spec(labels={MANAGED_LABEL: "false", "dood.dag_id": "forged"})
    assert spec.all_labels() == IDENTITY.labels()


def test_a_gpu_count_needs_the_gpu_claims():
    with pytest.raises(DoodConfigError, match="GpuClaims"):
        ContainerLauncher(FakeApi()).create(_spec(resources=Resources(gpus=1)))


# --- create without a 409 ---


def test_create_sends_the_spec_under_its_deterministic_name():
    api = FakeApi()
    spec = _spec()
    assert ContainerLauncher(api).create(spec) == f"id-{spec.name}"
    assert api.calls == [("create", spec.name)]


@pytest.mark.parametrize("status", ["created", "exited", "dead"])
def test_a_leftover_of_this_very_try_is_removed_and_the_create_retried(status):
    spec = _spec()
    api = FakeApi(containers={spec.name: _existing(status, IDENTITY.labels())})
    assert ContainerLauncher(api).create(spec) == f"id-{spec.name}"
    assert api.calls == [
        ("create", spec.name),
        ("inspect_container", spec.name),
        ("remove", "old"),
        ("create", spec.name),
    ]


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (None, ForeignContainerError, f"does not carry the label {MANAGED_LABEL}=true"),
        ({"app": "postgres"}, ForeignContainerError, "does not carry the label"),
        ({**IDENTITY.labels(), "dood.try_number": "1"}, ForeignContainerError, "belongs to another task"),
        ({**IDENTITY.labels(), "dood.task_id": "other"}, ForeignContainerError, "belongs to another task"),
    ],
)
def test_a_container_of_someone_else_under_our_name_is_never_touched(labels, error, message):
    spec = _spec()
    api = FakeApi(containers={spec.name: _existing("exited", labels)})
    with pytest.raises(error, match=message):
        ContainerLauncher(api).create(spec)
    assert not any(call[0] == "remove" for call in api.calls) and spec.name in api.containers


@pytest.mark.parametrize("status", ["running", "paused", "restarting"])
def test_a_running_container_of_this_try_is_not_replaced(status):
    spec = _spec()
    api = FakeApi(containers={spec.name: _existing(status, IDENTITY.labels())})
    with pytest.raises(DoodError, match=f"already {status}; refusing to start a second one"):
        ContainerLauncher(api).create(spec)
    assert not any(call[0] == "remove" for call in api.calls)


# --- the outcome ---


def test_the_outcome_comes_from_the_state_and_a_wait_result_wins():
    state = {"ExitCode": 137, "OOMKilled": True, "Error": ""}
    outcome = Outcome.from_state(state)
    assert (outcome.exit_code, outcome.oom_killed, outcome.error) == (137, True, "")
    waited = Outcome.from_state(state, {"StatusCode": 1, "Error": {"Message": "io error"}})
    assert (waited.exit_code, waited.oom_killed, waited.error) == (1, True, "io error")
    assert Outcome.from_state({"ExitCode": 0, "Error": "from state"}, {"StatusCode": 0, "Error": None}).error == (
        "from state"
    )
