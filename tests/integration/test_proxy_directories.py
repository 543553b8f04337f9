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

from dood.mounts.mount_map import MountMap
from dood.mounts.run_directories import HostDirectories
from dood.mounts.source_safety import LEAF_MODE, TEMPORARY_PREFIX
from dood.policy import Policy
from dood.proxy.directory_api import BURST
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
        assert (
            os.lstat(path).st_gid == 0
        )  # made, once the budget allowed (waiting: tests/unit/mounts/test_run_directories.py)
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


def _checkpoint(setup, task: dict, **fields):
    body = {"kind": "checkpoint", "root": f"{setup.allowed}/dood-checkpoints", "task": task, **fields}
    answer = setup.api.post(f"{setup.api.base_url}/dood/v1/directories", json=body)
    return answer.status_code, answer.json()


def test_a_checkpoint_is_the_same_directory_for_every_try_of_its_task_instance_and_goes_on_finish(setup):
    """`kind: checkpoint` through the running proxy (uid 50001, as compose runs it): the path is derived from
    the task instance and the proxy's stack; a step writes it, a later try finds what it wrote, another map
    index gets another directory, and `finish` removes it without following a link a step planted in it."""
    task = {"dag_id": "dood_it_proxy_directories", "task_id": "train", "run_id": f"manual__{uuid.uuid4().hex[:8]}"}
    status, first = _checkpoint(setup, {**task, "map_index": -1, "first_try": 1}, user=STEP_USER)
    assert status == 200 and first["created"] is True, first
    path = first["path"]
    assert path.startswith(f"{setup.allowed}/dood-checkpoints/"), path
    assert stat.S_IMODE(os.stat(path).st_mode) == LEAF_MODE and os.stat(path).st_uid == PROXY_UID
    champion_file = Path(setup.champion) / "model.pkl"
    kept = champion_file.read_text()
    assert run(setup, [f"{path}:/c"], f"echo epoch-3 > /c/state; ln -s {setup.champion} /c/champion") == 0

    status, again = _checkpoint(setup, {**task, "map_index": -1, "first_try": 1}, user=STEP_USER)
    assert (status, again["path"], again["created"]) == (200, path, False), again  # try 2: the same, kept
    assert run(setup, [f"{path}:/c"], "grep -q epoch-3 /c/state") == 0, "try 2 reads what try 1 wrote"
    status, mapped = _checkpoint(setup, {**task, "map_index": 1, "first_try": 1}, user=STEP_USER)
    assert status == 200 and mapped["path"] != path and os.listdir(mapped["path"]) == [], mapped

    status, finished = _checkpoint(setup, {**task, "map_index": -1, "first_try": 1}, action="finish")
    assert status == 200, finished
    assert not os.path.lexists(path), "finish removes the task instance's directory"
    assert champion_file.read_text() == kept, "the link a step planted was removed, not followed"
    assert os.path.isdir(mapped["path"]), "another map index's directory stays"


def test_a_checkpoint_request_names_a_task_instance_never_a_path(setup):
    """Whatever a client sends, the proxy derives the path: no field reaches another directory, a finish takes
    no user, a root outside the policy is refused, and nothing is made by a refusal."""
    task = {"dag_id": "dood_it_proxy_directories", "task_id": "train", "run_id": "r1", "map_index": -1, "first_try": 1}
    before = snapshot(setup.allowed)
    for fields, status, words in (
        ({"task": {**task, "path": setup.other_run}}, 400, "unknown field"),
        ({"task": task, "path": setup.other_run}, 400, "unknown field"),
        ({"task": task, "root": "/etc/dood-checkpoints"}, 403, "/etc"),
        ({"task": task, "root": f"{setup.allowed}/ro/dood-checkpoints"}, 403, "read-only"),
        ({"task": task, "root": f"{setup.allowed}/models"}, 400, "named 'dood-checkpoints'"),
        ({"task": task, "action": "finish", "user": STEP_USER}, 400, "no 'user'"),
        ({"task": task, "action": "finish", "keep": 101}, 400, "keep"),
        ({"task": task, "user": "0:0"}, 403, "user"),
    ):
        body = {"kind": "checkpoint", "root": f"{setup.allowed}/dood-checkpoints", "user": STEP_USER, **fields}
        if body.get("action") == "finish" and "user" not in fields:
            body.pop("user")
        answer = setup.api.post(f"{setup.api.base_url}/dood/v1/directories", json=body)
        message = answer.json().get("message", "")
        assert answer.status_code == status and words in message, (fields, answer.status_code, message)
    assert snapshot(setup.allowed) == before, "a refused checkpoint request makes and removes nothing"
    # a hostile id is only a name: slugged and hashed below the proxy's own stack, never a path
    status, made = _checkpoint(setup, {**task, "run_id": "../../runs", "task_id": "../.."}, user=STEP_USER)
    stack = setup.api.get(f"{setup.api.base_url}/dood/v1/info").json()["stack"]
    stack_dir = f"{setup.allowed}/dood-checkpoints/{stack}"
    assert status == 200 and os.path.dirname(os.path.dirname(made["path"])) == stack_dir, made
    assert ".." not in made["path"].split("/") and os.path.realpath(made["path"]) == made["path"], made


# --- the checkpoint attack pass (docs/security.md, "Attacks tried": C1-C8), each on this proxy (uid 50001) ---


def _task(**fields) -> dict:
    return {
        "dag_id": "dood_it_proxy_directories",
        "task_id": "ck",
        "run_id": "r",
        "map_index": -1,
        "first_try": 1,
        **fields,
    }


def _finish(setup, task: dict, root: str | None = None, keep: int = 0, client=None):
    client = client or setup.api
    body = {"kind": "checkpoint", "root": root or f"{setup.allowed}/dood-checkpoints", "task": task, "action": "finish"}
    answer = client.post(f"{client.base_url}/dood/v1/directories", json={**body, "keep": keep})
    return answer.status_code, answer.json(), answer.headers.get("Retry-After")


def _stack(setup) -> str:
    return setup.api.get(f"{setup.api.base_url}/dood/v1/info").json()["stack"]


def _tree(root: Path) -> list[tuple[str, int, int, int, int]]:
    return [(str(root), 0, 0, 0, 0), *snapshot(root)]


def test_c2_finish_never_follows_a_link_a_step_planted_above_the_task_directory(setup):
    """C2: a step bound to its leaf L plants `L/dood-checkpoints -> <outside>` (and, variant, a real
    `L/dood-checkpoints/<stack> -> <outside>`); finish with `root` there was walking through the link and
    removing checkpoint-shaped directories outside the allowed root. Now the way from / is walked on
    O_NOFOLLOW fds, each checked as open checks it: L is group-writable, so nothing is followed or removed."""
    from dood.mounts.checkpoints import CheckpointKey, checkpoint_path

    stack = _stack(setup)
    key = CheckpointKey.from_request(_task(first_try=2), stack)
    outside = setup.base / f"victim-{uuid.uuid4().hex[:6]}" / "dood-checkpoints"
    instance = Path(checkpoint_path(str(outside), key))
    for directory in (instance, instance.parent / f"done-{1:019d}-{instance.name}"):
        directory.mkdir(parents=True)
        (directory / "model.ckpt").write_text("precious")
    for directory in [outside.parent, *outside.parent.rglob("*")]:
        if directory.is_dir():
            os.chown(directory, PROXY_UID, 0)
            os.chmod(directory, LEAF_MODE if directory.name.startswith(("run-", "done-")) else 0o755)
    before = _tree(outside.parent)
    leaf = f"{setup.allowed}/runs/c2-{uuid.uuid4().hex[:8]}"
    assert post(setup, {"path": leaf, "user": STEP_USER, "fresh": True}) == (200, True)
    plant_root = f"ln -s {outside} /w/dood-checkpoints"
    plant_stack = f"mkdir /w/dood-checkpoints && ln -s {outside}/{stack} /w/dood-checkpoints/{stack}"
    for plant in (plant_root, plant_stack):
        assert run(setup, [f"{leaf}:/w"], f"rm -rf /w/dood-checkpoints; {plant}") == 0
        status, answer, _ = _finish(setup, key.to_request(), root=f"{leaf}/dood-checkpoints")
        assert status == 403 and "writable by group" in answer["message"], answer
        assert _tree(outside.parent) == before, "nothing outside the allowed root was touched"
    status, answer, _ = _finish(setup, key.to_request(), root=leaf)  # the attack as first sent
    assert status == 400 and "named 'dood-checkpoints'" in answer["message"], answer
    assert _tree(outside.parent) == before


def test_c3_finish_under_a_read_only_root_is_refused(setup):
    from dood.mounts.checkpoints import CheckpointKey, checkpoint_path

    root = setup.allowed / "ro" / "dood-checkpoints"
    victim = Path(checkpoint_path(str(root), CheckpointKey.from_request(_task(), _stack(setup))))
    victim.mkdir(parents=True, exist_ok=True)
    (victim / "input.csv").write_text("kept")
    before = _tree(setup.allowed / "ro")
    status, answer, _ = _finish(setup, _task(), root=str(root))
    assert status == 403 and "read-only" in answer["message"], answer
    assert _tree(setup.allowed / "ro") == before


def test_c1_a_live_checkpoint_is_never_taken_for_a_finished_one(setup):
    """C1: run ids shaped like finished names ('done-5-x', 'done-<20 digits>') are live instances' `run-...`
    directories: another instance's finish (keep 1) leaves them and what their steps wrote."""
    lives = []
    for run_id in ("done-5-x", "done-99999999999999999999", f"done-{10**18:019d}-run-x"):
        status, opened = _checkpoint(setup, _task(run_id=run_id), user=STEP_USER)
        assert status == 200 and os.path.basename(opened["path"]).startswith("run-"), opened
        assert run(setup, [f"{opened['path']}:/c"], "echo epoch-2 > /c/state") == 0
        lives.append(opened["path"])
    other = _task(run_id=f"other-{uuid.uuid4().hex[:6]}")
    assert _checkpoint(setup, other, user=STEP_USER)[0] == 200
    status, finished, _ = _finish(setup, other, keep=1)
    assert status == 200 and finished["removed"] == [] and finished["kept"], finished
    assert all(Path(path, "state").read_text() == "epoch-2\n" for path in lives), "every live checkpoint stays"


def test_c6_a_tree_deeper_than_any_recursion_is_removed_and_answered(setup):
    """C6: a step writes 1,500 nested directories (group-writable, as a step sharing its checkpoint does);
    finish was dying with RecursionError and dropping the connection. Now removed, answered."""
    task = _task(task_id="c6", run_id=f"deep-{uuid.uuid4().hex[:6]}")
    status, opened = _checkpoint(setup, task, user=STEP_USER)
    assert status == 200, opened
    deep = "umask 002; cd /c; i=0; while [ $i -lt 1500 ]; do mkdir a && cd a || exit 1; i=$((i+1)); done; touch f"
    assert run(setup, [f"{opened['path']}:/c"], deep) == 0
    status, finished, _ = _finish(setup, task)
    assert status == 200 and finished["removed"] == [opened["path"]] and finished["problems"] == [], finished
    assert not os.path.lexists(opened["path"])
    assert setup.proxy.process.poll() is None and "RecursionError" not in setup.proxy.log.read_text()


def test_c8_finish_removes_only_a_checkpoint_leaf(setup):
    """C8: a plain proxy-owned directory at the derived path (a leaf inside) is left, and said. The plain
    endpoint no longer makes anything in the checkpoint tree, so it is planted here as the proxy's user."""
    from dood.mounts.checkpoints import CheckpointKey, checkpoint_path

    task = _task(task_id="c8", run_id=f"c8-{uuid.uuid4().hex[:6]}")
    derived = checkpoint_path(f"{setup.allowed}/dood-checkpoints", CheckpointKey.from_request(task, _stack(setup)))
    status, message = post(setup, {"path": f"{derived}/run1", "user": STEP_USER, "fresh": True})
    assert status == 403 and "kind" in message, message
    assert (
        _checkpoint(setup, _task(task_id="c8", run_id="c8-sibling"), user=STEP_USER)[0] == 200
    )  # the task's directory
    Path(derived, "run1").mkdir(parents=True)
    Path(derived, "run1", "result.json").write_text("{}")
    for directory in (derived, f"{derived}/run1"):
        os.chown(directory, PROXY_UID, 0)
    os.chmod(f"{derived}/run1", LEAF_MODE)
    status, finished, _ = _finish(setup, task)
    assert status == 200 and finished["removed"] == [], finished
    assert "not a checkpoint directory" in finished["problems"][0], finished
    assert Path(derived, "run1", "result.json").read_text() == "{}"


def test_c4_a_root_not_named_dood_checkpoints_is_refused_and_nothing_is_made(setup):
    before = snapshot(setup.allowed)
    for body in (
        {"user": STEP_USER},
        {"action": "finish"},
    ):
        answer = setup.api.post(
            f"{setup.api.base_url}/dood/v1/directories",
            json={"kind": "checkpoint", "root": f"{setup.allowed}/models", "task": _task(), **body},
        )
        assert answer.status_code == 400 and "dood-checkpoints" in answer.json()["message"], answer.json()
    assert snapshot(setup.allowed) == before


def test_c5_a_fresh_leaf_found_empty_stays_empty_whatever_races_it(proxy_base, docker_api):
    """C5: a `fresh` leaf for an empty plain directory P raced with a request making something in P (a
    checkpoint whose root is below P, a leaf below P): both were answered 200 once in 25, leaving a "fresh"
    leaf that was not empty. Every making request now holds one lock from its checks to its last change."""
    allowed = _layout(proxy_base)  # a proxy of its own: 40 rounds make ~150 directories (its whole budget)
    with running_proxy(proxy_base, _policy(allowed), uid=PROXY_UID) as proxy:
        _race_fresh_against_inside(proxy, allowed)


def _race_fresh_against_inside(proxy, allowed: Path) -> None:
    clients = [docker.APIClient(base_url=proxy.url, version="auto", timeout=60) for _ in range(3)]
    setup = SimpleNamespace(api=clients[2])
    both = []
    try:
        for i in range(40):
            parent = f"{allowed}/runs/c5-{uuid.uuid4().hex[:8]}"
            assert post(setup, {"path": parent}) == (200, True)
            if i % 2:
                inside = {"path": f"{parent}/x", "user": STEP_USER}
            else:
                inside = {
                    "kind": "checkpoint",
                    "root": f"{parent}/dood-checkpoints",
                    "task": _task(),
                    "user": STEP_USER,
                }
            bodies = [{"path": parent, "user": STEP_USER, "fresh": True}, inside]
            results: dict[int, int] = {}
            go = threading.Barrier(2)

            def ask(n, client=None, bodies=bodies, results=results, go=go):
                go.wait()
                results[n] = client.post(f"{client.base_url}/dood/v1/directories", json=bodies[n]).status_code

            threads = [threading.Thread(target=ask, args=(n, clients[n])) for n in (i % 2, 1 - i % 2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            if results.get(0) == 200:
                assert os.listdir(parent) == [], f"the fresh leaf {parent} holds {os.listdir(parent)} ({results})"
            both.append(results)
    finally:
        for client in clients:
            client.close()
    assert all(len(r) == 2 for r in both), both
    print("fresh / inside statuses:", sorted({(r[0], r[1]) for r in both}))


def test_c7_finishes_of_big_checkpoints_never_stall_an_open(setup):
    """C7: 8 finishes of 20,000-file checkpoints at once (the attack: 60,000 each, an unrelated open stalled
    5 s): at most REMOVERS remove at once (the rest: 429, Retry-After), each at most MAX_REMOVED_ENTRIES
    entries, so opens keep the server's other workers; every checkpoint is gone once finishes are asked again."""
    from dood.proxy.directory_api import REMOVERS

    tasks = [_task(task_id="c7", run_id=f"big{i}-{uuid.uuid4().hex[:6]}") for i in range(8)]
    paths = []
    for task in tasks:
        status, opened = _checkpoint(setup, task, user=STEP_USER)
        assert status == 200, opened
        fd = os.open(opened["path"], os.O_RDONLY)
        for n in range(20_000):
            os.close(os.open(f"f{n}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.close(fd)
        paths.append(opened["path"])
    clients = [docker.APIClient(base_url=setup.proxy.url, version="auto", timeout=120) for _ in tasks]
    statuses: list[int] = []
    answers: list[dict] = []

    def finish_all(task, client):
        while True:
            status, answer, retry = _finish(setup, task, client=client)
            statuses.append(status)
            if status != 429:
                answers.append(answer)
                return
            time.sleep(min(float(retry or 1), 0.5))  # the Airflow side waits Retry-After (tests: shorter)

    threads = [threading.Thread(target=finish_all, args=pair) for pair in zip(tasks, clients, strict=True)]
    for thread in threads:
        thread.start()
    waits = []
    while any(thread.is_alive() for thread in threads):
        started = time.monotonic()
        assert _checkpoint(setup, _task(task_id="c7-other"), user=STEP_USER)[0] == 200
        waits.append(time.monotonic() - started)
    for thread in threads:
        thread.join(120)
    for client in clients:
        client.close()
    print(f"{len(waits)} opens during the finishes, slowest {max(waits):.3f} s; finish answers {sorted(statuses)}")
    assert statuses.count(200) == 8 and not [a for a in answers if a.get("problems")], answers
    assert not [p for p in paths if os.path.lexists(p)] and os.listdir(os.path.dirname(paths[0])) == []
    assert 429 in statuses or REMOVERS >= 8, "more finishes than REMOVERS at once are told to wait"
    assert max(waits) < 1.5, f"an open waited {max(waits):.2f} s behind finishes (attack: 5 s)"
