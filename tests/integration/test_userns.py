"""A Docker engine with user-namespace remapping (`dockerd --userns-remap=default`), the tests' own second
engine (`second_engine.py`): no container uid is a host uid, and dood detects it, says it, and still gives
steps directories they can write.

What is measured on the real engine: a container's root is host uid 100000 (`dockremap`'s first subordinate
id), so it cannot write a root-owned bind source; a step as 50000:0 is host 150000:100000, so a directory
group-owned by host gid 0 is closed to it and one group-owned by host gid 100000 is open; what it writes
is owned by 150000:100000 on the host. Through dood-proxy (as the compose stack runs it: uid 50001, the
socket's group, and here also the remapped gid 100000, which it needs to give a leaf that group), the leaf
it makes for "50000:0" must be group-owned by the host gid the container's gid 0 is.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import docker
import pytest

from dood.engine.security import EngineSecurity, RemapIds
from dood.ui.reader import EngineReader
from tests.integration.conftest import TEST_IMAGE, xcom_value
from tests.integration.proxy_process import PROXY_GID, PROXY_UID, running_proxy
from tests.integration.second_engine import SecondEngine

STEP_USER = "50000:0"  # the default allowed identity (the Airflow image's user)
POLICY = "  allowed_images: ['dood-test-busybox:*']\n  allowed_host_roots: ['{data}']\n"


@pytest.fixture(scope="module")
def engine(docker_api) -> Iterator[SecondEngine]:
    """The remapping engine with the test image; stopped (by its pidfile's pid) after this module."""
    if os.geteuid() != 0:
        pytest.skip("a second dockerd (own bridge, data root, socket) needs root")
    started = SecondEngine.for_session(role="userns", subnet=216, userns_remap="default")
    started.start()
    try:
        started.load_image(TEST_IMAGE)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def remap(engine) -> RemapIds:
    """The host ids of the engine's container ids, from /etc/subuid and /etc/subgid (checked against /info)."""
    security = EngineSecurity.from_info(engine.api().info())
    return RemapIds.load(security.remapped_root)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    """A 0755 tree the proxy's uid can reach (pytest's own tmp is 0700): data/ (the proxy's, as the data root
    is in the compose stack: it makes the directories there), proxy/ (its socket and log)."""
    made = Path(f"/tmp/dood-userns-test-{os.getpid()}")
    shutil.rmtree(made, ignore_errors=True)
    (made / "data").mkdir(parents=True)
    (made / "proxy").mkdir()
    for directory in (made, made / "data"):
        directory.chmod(0o755)
    os.chown(made / "data", PROXY_UID, PROXY_GID)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def proxy_as_user(root: Path, upstream: str, policy_yaml: str, extra_groups: tuple[int, ...] = ()):
    """dood-proxy as uid 50001 with the socket's group, and `extra_groups` (the remapped gid a leaf is given:
    chown needs membership)."""
    return running_proxy(root, policy_yaml, "--upstream", upstream, uid=PROXY_UID, extra_groups=extra_groups)


@pytest.fixture(scope="module")
def proxy(engine, remap, base) -> Iterator[SimpleNamespace]:
    """The proxy in front of the remapping engine, in the group the leaves must get (the remapped gid 0)."""
    policy = POLICY.format(data=base / "data")
    with proxy_as_user(base / "proxy", engine.url, policy, extra_groups=(remap.host_gid(0),)) as running:
        yield running
        print(f"dood-proxy's log:\n{running.log.read_text()}")  # shown with a failing test's output


def run(api: docker.APIClient, binds: list[str], script: str, user: str | None = None) -> tuple[int, str]:
    """Create, start, wait, remove: (exit code, output: stderr into stdout, in order)."""
    host_config = api.create_host_config(binds=binds)
    container = api.create_container(
        TEST_IMAGE, ["sh", "-c", f"exec 2>&1; {script}"], user=user, host_config=host_config
    )["Id"]
    try:
        api.start(container)
        code = api.wait(container, timeout=60)["StatusCode"]
        return code, api.logs(container).decode()
    finally:
        api.remove_container(container, force=True)


def directory(path: Path, uid: int, gid: int, mode: int) -> str:
    path.mkdir()
    os.chown(path, uid, gid)
    path.chmod(mode)
    return str(path)


WRITE = "id; echo '{\"ok\": 1}' > /out/result.json && echo WROTE"


# --- what the engine does (plain creates on its own socket) ---


def test_the_engine_reports_userns_and_its_remapped_root(engine, remap, docker_api):
    security = EngineSecurity.from_info(engine.api().info())
    assert security.userns and security.remapped_root == (remap.host_uid(0), remap.host_gid(0))
    assert security.user_namespaces().startswith(f"remapped (container uid 0 = host uid {remap.host_uid(0)}")
    assert remap.host_uid(50000) == remap.host_uid(0) + 50000  # one range of 65536: dockerd's default
    main = EngineSecurity.from_info(docker_api.info())
    assert not main.userns and main.user_namespaces().startswith("not remapped")
    assert EngineReader(engine.api()).host()["UserNamespaces"] == security.user_namespaces()  # the DooD page's


def test_container_root_cannot_write_a_root_owned_bind_source(engine, base):
    target = directory(base / "data" / "root-owned", 0, 0, 0o755)
    code, out = run(engine.api(), [f"{target}:/out"], 'id -u; stat -c "%u:%g" /out; echo x > /out/x && echo WROTE')
    assert code != 0 and "Permission denied" in out and "WROTE" not in out, out
    assert out.splitlines()[:2] == ["0", "65534:65534"], out  # root inside; the host's root is nobody here
    assert os.listdir(target) == []


def test_a_step_writes_only_where_the_group_is_the_remapped_gid(engine, remap, docker_api, base):
    """50000:0 is host 150000:100000: a leaf of host group 0 is closed to it, one of group 100000 open;
    on the main engine (no remapping) the group-0 leaf is open (the control)."""
    host_gid = remap.host_gid(0)
    group_0 = directory(base / "data" / "leaf-gid-0", PROXY_UID, 0, 0o2770)
    mapped = directory(base / "data" / "leaf-gid-mapped", PROXY_UID, host_gid, 0o2770)
    code, out = run(engine.api(), [f"{group_0}:/out"], WRITE, user=STEP_USER)
    assert code != 0 and "Permission denied" in out, out
    code, out = run(engine.api(), [f"{mapped}:/out"], WRITE, user=STEP_USER)
    assert code == 0 and "WROTE" in out, out
    written = os.stat(f"{mapped}/result.json")
    assert (written.st_uid, written.st_gid) == (remap.host_uid(50000), host_gid)  # 150000:100000
    code, out = run(docker_api, [f"{group_0}:/out"], WRITE, user=STEP_USER)
    assert code == 0 and "WROTE" in out, out
    assert os.stat(f"{group_0}/result.json").st_uid == 50000


# --- through dood-proxy ---


def test_the_proxy_says_the_engine_remaps(proxy, remap):
    expected = f"user namespaces: remapped (container uid 0 = host uid {remap.host_uid(0)}, gid 0 = host gid "
    deadline = time.monotonic() + 10
    while expected not in proxy.log.read_text():
        assert time.monotonic() < deadline, f"no {expected!r} in the proxy's log:\n{proxy.log.read_text()}"
        time.sleep(0.05)


def test_a_leaf_the_proxy_makes_is_writable_by_the_step(proxy, remap, base):
    api = docker.APIClient(base_url=proxy.url, version="auto", timeout=60)
    leaf = f"{base / 'data'}/runs/by-proxy"
    answer = api.post(f"{api.base_url}/dood/v1/directories", json={"path": leaf, "user": STEP_USER})
    assert answer.status_code == 200, answer.text
    assert os.stat(leaf).st_gid == remap.host_gid(0), f"leaf group {os.stat(leaf).st_gid}"
    code, out = run(api, [f"{leaf}:/out"], WRITE, user=STEP_USER)
    assert code == 0 and "WROTE" in out, out


def test_a_proxy_outside_the_remapped_group_refuses_and_says_the_fix(engine, remap, base):
    """Giving a leaf to host gid 100000 needs that group (no CAP_CHOWN): without it, a 403 naming it."""
    root = base / "proxy-no-group"
    root.mkdir()
    with proxy_as_user(root, engine.url, POLICY.format(data=base / "data")) as running:
        api = docker.APIClient(base_url=running.url, version="auto", timeout=60)
        leaf = f"{base / 'data'}/runs/no-group"
        answer = api.post(f"{api.base_url}/dood/v1/directories", json={"path": leaf, "user": STEP_USER})
    assert answer.status_code == 403, answer.text
    assert f"cannot give a directory to group {remap.host_gid(0)}" in answer.text
    assert not os.path.lexists(leaf)


def test_the_operator_through_the_proxy_returns_its_result(proxy, base, airflow_db, next_date):
    import dood_it_userns

    dood_it_userns.CONFIG.parent.mkdir(parents=True, exist_ok=True)
    dood_it_userns.CONFIG.write_text(
        f"docker:\n  url: {proxy.url}\nruns_root: {base / 'data' / 'runs'}\nmount_discovery:\n  mode: 'off'\n"
        f"policy:\n  allowed_host_roots: ['{base / 'data'}']\n"
    )
    dagrun = dood_it_userns.dag.test(logical_date=next_date, run_after=next_date)
    assert xcom_value(dagrun).get("return_value") == {"id": STEP_USER}
