"""The directories endpoint attacked on a real dood-proxy, run as uid 50001 with the socket's group (as in
compose), on the real engine: what an outside attack run found, and what it did not try.

Task code reaches dood-proxy and nothing else. Through `POST /dood/v1/directories` it must not be able to
delete or change anything that exists (another run's result, a champion's model), make a directory for a
group the policy does not allow, leave a half-made directory, break a connection or a log line, or make
directories without bound. Every refusal is checked on disk (as root, the test's own view): nothing
made, nothing touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest

from dood.directories import HostDirectories
from dood.hostpaths import LEAF_MODE, TEMPORARY_PREFIX
from dood.mounts import MountMap
from dood.policy import Policy
from dood.proxy.directories import BURST
from tests.integration.conftest import TEST_IMAGE
from tests.integration.proxy_process import PROXY_GID, PROXY_UID, remove_labelled, running_proxy, traversable

STEP_USER = "50000:0"  # the steps' user (compose): group 0, which the proxy holds
UNGIVABLE = "1000:1000"  # allowed by the policy, but group 1000 is not the proxy's to give
LABEL = {"dood.dag_id": "dood_it_proxy_directories"}


def _policy(allowed: Path) -> str:
    return (
        "  allowed_images: ['dood-test-busybox:*']\n"
        f"  allowed_host_roots: ['{allowed}']\n"
        f"  read_only_host_roots: ['{allowed / 'ro'}', '{allowed / 'inputs' / 'ro'}']\n"
        f"  allowed_users: ['{STEP_USER}', '{UNGIVABLE}']\n"
    )


def _layout(base: Path) -> Path:
    """The allowed root, owned by the proxy's uid as compose's data root is (DOOD_PROXY_UID)."""
    traversable(base)
    allowed = base / "allowed"
    for directory in (allowed, allowed / "ro", allowed / "runs"):
        directory.mkdir()
        os.chown(directory, PROXY_UID, PROXY_GID)
        directory.chmod(0o755)
    return allowed


def _base() -> Path:
    """A folder of its own under /tmp: pytest's base folder is set back to 0700 whenever another pytest
    session starts on this machine, and the proxy's uid could then no longer reach anything in it."""
    return Path(tempfile.mkdtemp(prefix="dood-dirs-", dir="/tmp"))


@pytest.fixture
def proxy_base():
    base = _base()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(docker_api):
    base = _base()
    allowed = _layout(base)
    with running_proxy(base, _policy(allowed), uid=PROXY_UID) as proxy:
        client = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
        setup = SimpleNamespace(proxy=proxy, api=client, allowed=allowed, base=base)
        # another run's directory with its result, and a champion, written by containers as steps write them
        setup.other_run = f"{allowed}/runs/dood-other-t1-0123456789"
        setup.champion = f"{allowed}/models/pipe"
        for path, name, text in (
            (setup.other_run, "result.json", '{"accuracy": 0.97}'),
            (setup.champion, "model.pkl", "champion"),
        ):
            assert post(setup, {"path": path, "user": STEP_USER, "fresh": True}) == (200, True)
            assert run(setup, [f"{path}:/w"], f"echo '{text}' > /w/{name}") == 0
        yield setup
        client.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def cleanup(docker_api):
    yield
    remove_labelled(docker_api, "dood.dag_id=dood_it_proxy_directories")


def post(setup, body, client=None) -> tuple[int, object]:
    """(status, `created` or the refusal's message)."""
    client = client or setup.api
    answer = client.post(f"{client.base_url}/dood/v1/directories", json=body)
    payload = answer.json()
    return answer.status_code, payload.get("created", payload.get("message"))


def run(setup, binds: list[str], command: str, user: str = STEP_USER) -> int:
    """A step's container through the proxy: its exit code."""
    container = setup.api.create_container(
        TEST_IMAGE,
        ["sh", "-c", command],
        user=user,
        labels=LABEL,
        host_config=setup.api.create_host_config(binds=binds),
    )["Id"]
    setup.api.start(container)
    return setup.api.wait(container, timeout=60)["StatusCode"]


def snapshot(root: Path) -> list[tuple[str, int, int, int, int]]:
    """Every entry below `root`: path, owner, group, mode, size (what a refusal must leave unchanged)."""
    found = []
    for directory, names, files in os.walk(root):
        for name in [*names, *files]:
            info = os.lstat(os.path.join(directory, name))
            found.append((os.path.join(directory, name), info.st_uid, info.st_gid, info.st_mode, info.st_size))
    return sorted(found)


def test_a_leaf_is_the_proxys_shared_with_the_steps_group_and_a_step_writes_it(setup):
    path = f"{setup.allowed}/runs/dood-mine-t1-{uuid.uuid4().hex[:10]}"
    assert post(setup, {"path": path, "user": STEP_USER, "fresh": True}) == (200, True)
    info = os.lstat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (PROXY_UID, 0, LEAF_MODE)
    assert run(setup, [f"{path}:/w"], "echo '{}' > /w/result.json") == 0
    status, message = post(setup, {"path": path, "user": STEP_USER, "fresh": True})  # the same name again
    assert status == 409 and "'result.json'" in message, message
    assert Path(path, "result.json").read_text() == "{}\n"


def test_nothing_existing_is_ever_deleted_or_changed(setup):
    """The attack run's finding: `clear` deleted another run's result.json, a champion's model.pkl."""
    before = snapshot(setup.allowed)
    attempts = [
        {"path": setup.other_run, "clear": ["result.json"]},
        {"path": setup.other_run, "user": STEP_USER, "clear": ["result.json"]},
        {"path": setup.champion, "user": STEP_USER, "clear": ["model.pkl"]},
        {"path": setup.other_run, "user": STEP_USER, "fresh": True},
        {"path": setup.champion, "fresh": True},  # a directory only trusted users write: not over a leaf
        {"path": setup.other_run, "user": STEP_USER},  # kept as it is: 200, nothing touched
        {"path": f"{setup.other_run}/result.json", "user": STEP_USER},  # below a leaf
    ]
    answers = [post(setup, body) for body in attempts]
    assert [status for status, _ in answers] == [400, 400, 400, 409, 403, 200, 403], answers
    assert "'clear' is no longer accepted" in answers[0][1]
    assert snapshot(setup.allowed) == before
    assert Path(setup.other_run, "result.json").read_text() == '{"accuracy": 0.97}\n'
    assert Path(setup.champion, "model.pkl").read_text() == "champion\n"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"path": "{allowed}/runs/ovf", "user": "1:4294967296"}, 400, "user"),  # was an OverflowError: dropped
        ({"path": "{allowed}/runs/nul\x00x", "user": STEP_USER}, 400, "path"),  # dropped the connection
        ({"path": "{allowed}/runs/nl\n", "user": STEP_USER}, 400, "path"),  # made 'nl\n', logged the newline
        ({"path": "{allowed}/runs/x\nFORGED LOG LINE", "user": STEP_USER}, 400, "path"),
        ({"path": "{allowed}/runs/esc\x1b[2J", "user": STEP_USER}, 400, "path"),
        ({"path": "{allowed}/runs/" + "n" * 300, "user": STEP_USER}, 400, "path"),
        ({"path": "{allowed}/runs/a:b", "user": STEP_USER}, 400, "path"),
        ({"path": "{allowed}/runs/x", "user": "4242:4242"}, 403, "user"),  # not an allowed identity
        ({"path": "{allowed}/runs/x", "user": UNGIVABLE}, 403, "group 1000"),  # left a 0700 leaf before
        ({"path": "{allowed}/runs/x", "user": "50000:0\n"}, 400, "user"),
        ({"path": "{allowed}/ro/x", "user": STEP_USER}, 403, "read-only"),
        ({"path": "{allowed}/inputs", "user": STEP_USER}, 403, "holds the root"),  # above a read-only root
        ({"path": "/tmp/x", "user": STEP_USER}, 403, "allowed roots"),
    ],
)
def test_bad_input_is_refused_by_name_on_a_connection_that_stays_up_and_nothing_is_made(setup, body, status, field):
    body = {key: value.replace("{allowed}", str(setup.allowed)) for key, value in body.items()}
    before = snapshot(setup.allowed)
    answer_status, message = post(setup, body)
    assert answer_status == status and field in message, message
    assert snapshot(setup.allowed) == before, "a refusal makes nothing (no half-made leaf)"
    assert setup.api.get(f"{setup.api.base_url}/dood/v1/info").status_code == 200  # same client, still served
    log = setup.proxy.log.read_bytes()
    assert b"\x00" not in log and b"\x1b" not in log
    assert not any(line.startswith(b"FORGED") for line in log.splitlines()), "a newline reached the log raw"
    assert setup.proxy.process.poll() is None


def test_a_planted_link_racing_the_request_never_leads_outside(setup):
    """A step flips `<leaf>/sub` between a directory and a link to a directory of the test's, as fast as it
    can, while leaves below it are asked for: every request is refused (below a group-writable leaf) and
    nothing appears at the link's target."""
    leaf = f"{setup.allowed}/runs/flip-{uuid.uuid4().hex[:8]}"
    target = setup.base / "target"
    target.mkdir()
    os.chown(target, 50000, 0)  # even a directory the step could write itself
    assert post(setup, {"path": leaf, "user": STEP_USER})[0] == 200
    container = setup.api.create_container(
        TEST_IMAGE,
        ["sh", "-c", f"while true; do mkdir /w/sub; rmdir /w/sub; ln -s {target} /w/sub; rm /w/sub; done"],
        user=STEP_USER,
        labels=LABEL,
        host_config=setup.api.create_host_config(binds=[f"{leaf}:/w"]),
    )["Id"]
    setup.api.start(container)
    answers: dict[int, int] = {}
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        status, _ = post(setup, {"path": f"{leaf}/sub/x", "user": STEP_USER})
        answers[status] = answers.get(status, 0) + 1
    with contextlib.suppress(docker.errors.NotFound):  # another session's janitor may have removed it
        setup.api.remove_container(container, force=True)
    print(f"requests below a flipping link: {answers}")
    # every request refused: 403, or 429 once the directories budget is spent (the proxy answers fast)
    assert set(answers) <= {403, 429} and answers.get(403, 0) > 10, answers
    assert list(target.iterdir()) == []


def test_info_no_longer_advertises_whom_the_proxy_trusts(setup):
    info = setup.api.get(f"{setup.api.base_url}/dood/v1/info").json()
    assert info["proxy"] == "dood-proxy" and "trusted_uids" not in info


def test_no_temporary_name_is_left_behind(setup):
    assert list(setup.allowed.rglob(f"{TEMPORARY_PREFIX}*")) == []


def test_directories_are_bounded_and_a_task_waits_its_turn(proxy_base, docker_api):
    """The attack run made 2,306 directories in 3 s: now the burst, then PER_MINUTE a minute; 429 with
    Retry-After past it, which the Airflow side waits out (its request then succeeds)."""
    allowed = _layout(proxy_base)
    with running_proxy(proxy_base, _policy(allowed), uid=PROXY_UID) as proxy:
        client = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
        statuses: list[int] = []
        retry_after = None
        started = time.monotonic()
        # until the budget answers 429: on a busy machine the burst may take long; the refill (5 a second) is
        # what the count allows for, so only a budget that never runs out makes this run to its end
        while len(statuses) < BURST + 2000 and time.monotonic() - started < 300:
            answer = client.post(
                f"{client.base_url}/dood/v1/directories", json={"path": f"{allowed}/runs/d{len(statuses)}"}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                retry_after = answer.headers.get("Retry-After")
                break
        elapsed = time.monotonic() - started
        made = len(os.listdir(allowed / "runs"))
        print(f"{made} directories made in {elapsed:.2f} s, then {statuses[-1]} (Retry-After {retry_after})")
        assert statuses[-1] == 429 and retry_after is not None and int(retry_after) >= 1, statuses[-5:]
        assert BURST <= made <= BURST + 5 * elapsed + 1  # the burst, and what came back meanwhile (5 a second)
        assert "429" in proxy.log.read_text()
        # the Airflow side is told to wait, waits, and gets its run directory
        waited = time.monotonic()
        directories = HostDirectories(
            client, Policy(allowed_host_roots=[str(allowed)]), MountMap([], identity=True), through_proxy=True
        )
        path = directories.for_container(f"{allowed}/runs/dood-late-t1-0123456789", STEP_USER, fresh=True, what="run")
        assert os.lstat(path).st_gid == 0  # made, once the budget allowed (waiting: tests/unit/test_directories.py)
        print(f"the run directory came after {time.monotonic() - waited:.2f} s")
        # reads cost nothing: what exists is answered however spent the budget is
        assert all(post(SimpleNamespace(api=client), {"path": path, "user": STEP_USER})[0] == 200 for _ in range(20))
        client.close()


def test_concurrent_requests_for_one_leaf_make_it_once_whole(setup):
    """Many clients ask for the same new leaf at once: one makes it, the others find it whole (never a 0700
    leaf, never one replaced after it was answered)."""
    path = f"{setup.allowed}/runs/race-{uuid.uuid4().hex[:8]}"
    results: list[tuple[int, object]] = []
    clients = [docker.APIClient(base_url=setup.proxy.url, version="auto", timeout=60) for _ in range(8)]
    go = threading.Event()

    def ask(client):
        go.wait()
        results.append(post(setup, {"path": path, "user": STEP_USER, "fresh": True}, client))

    threads = [threading.Thread(target=ask, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(30)
    for client in clients:
        client.close()
    assert sorted(results, key=str) == sorted([(200, True)] + [(200, False)] * 7, key=str), results
    info = os.lstat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (PROXY_UID, 0, LEAF_MODE)


def test_a_second_attempt_with_the_same_name_never_reads_the_firsts_result(setup, tmp_path, docker_api):
    """DoodContainerOperator through the proxy, twice as the same task try (one container name, one run
    directory): the first's result is its XCom; the second is refused before it creates anything, and the
    first's result.json is neither deleted nor taken for the second's. A new try has a directory of its own."""
    import contextvars

    from airflow.sdk.bases.operator import ExecutorSafeguard

    from dood.exceptions import DoodError
    from dood.operators.container import DoodContainerOperator

    config = tmp_path / "dood.yaml"
    config.write_text(
        f"docker:\n  url: {setup.proxy.url}\nruns_root: {setup.allowed}/runs\n"
        f"policy:\n  allowed_host_roots: ['{setup.allowed}']\n  allowed_images: ['dood-test-busybox:*']\n"
    )
    run_id = f"it__{uuid.uuid4().hex}"

    def execute(script: str, try_number: int = 1, **kwargs):
        ti = SimpleNamespace(
            dag_id="dood_it_proxy_directories", task_id="same", run_id=run_id, map_index=-1, try_number=try_number
        )
        context = {"ti": ti, "task_instance": ti, "run_id": run_id, "logical_date": None}
        context |= {"data_interval_start": None, "data_interval_end": None}
        operator = DoodContainerOperator(
            task_id="same", image=TEST_IMAGE, command=["sh", "-c", script], config_path=str(config), **kwargs
        )
        ctx = contextvars.copy_context()
        ctx.run(ExecutorSafeguard.tracker.set, operator)
        return ctx.run(operator.execute, context)

    assert execute('echo \'{"attempt": 1}\' > "$DOOD_RESULT_FILE"') == {"attempt": 1}
    [run_dir] = [d for d in (setup.allowed / "runs").iterdir() if d.name.startswith("dood-dood_it_proxy_dire")]
    ours = {"label": "dood.dag_id=dood_it_proxy_directories"}
    before = [c["Id"] for c in docker_api.containers(all=True, filters=ours)]
    with pytest.raises(DoodError, match="earlier attempt") as caught:
        execute("true")  # writes no result: the first's would have been read as this one's
    assert [c["Id"] for c in docker_api.containers(all=True, filters=ours)] == before  # nothing created
    assert "'result.json'" in str(caught.value)
    assert json.loads((run_dir / "result.json").read_text()) == {"attempt": 1}
    second = 'echo \'{"attempt": 2}\' > "$DOOD_RESULT_FILE"'  # a new try, not adopting the first's container
    assert execute(second, try_number=2, reattach=False) == {"attempt": 2}
    assert json.loads((run_dir / "result.json").read_text()) == {"attempt": 1}
