"""dood-proxy's side of a container's identity: labels it owns, names per stack, its own uid and groups."""

from __future__ import annotations

import os

import pytest

from dood.naming import TaskIdentity
from dood.policy import Policy
from dood.proxy.allow_list import Refused
from dood.proxy.identity import IdentityGuard, image_group_problems


def guard(**policy) -> IdentityGuard:
    return IdentityGuard(Policy(**policy), socket_path=None, stack="team-a", host=None)


def test_task_names_are_the_ones_their_labels_give_in_this_stack():
    ours = TaskIdentity(dag_id="gpu_train", task_id="fit", run_id="r1", stack="team-a")  # a DAG id starting 'gpu'
    theirs = TaskIdentity(dag_id="gpu_train", task_id="fit", run_id="r1", stack="team-b")
    check = guard().check_name
    check(ours.container_name(), ours.labels())
    check("/" + ours.container_name(), ours.labels())
    for name in (theirs.container_name(), "dood-anything", "dood-gpu-mine", "dood-gpu-lock-x"):
        with pytest.raises(Refused):
            check(name, ours.labels())
    for name in (None, "", "my-own-name", "dood-gpu-lock", "dood-gpu-probe", "dood-gpu-ticket-1-abcdef"):
        check(name, {})  # not task names: free, or the GPU referee's to check


def test_dood_labels_are_the_proxys_and_task_labels_pass():
    labels = guard().labels(
        {"dood.stack": "x", "dood.host": "h", "dood.janitor": "spare", "dood.gpus": "1", "dood.dag_id": "d", "a": "b"}
    )
    assert labels == {"dood.gpus": "1", "dood.dag_id": "d", "a": "b", "dood.managed": "true", "dood.stack": "team-a"}
    with_host = IdentityGuard(Policy(), socket_path=None, stack="s", host="gpu-b").labels({"dood.host": "other"})
    assert with_host["dood.host"] == "gpu-b"


def test_the_proxys_own_uid_and_the_sockets_group_are_never_a_steps(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.write_text("")
    os.chown(sock, 0, 4242)
    assert guard(allowed_users=["50000:0"]).problems() == []
    own = IdentityGuard(
        Policy(allowed_users=[f"{os.geteuid()}:0", "50000:4242"], allow_root_user=True),
        socket_path=None,
        stack="s",
        host=None,
    )
    assert own.problems() == []  # allow_root_user voids it all (documented)
    risky = IdentityGuard(
        Policy(allowed_users=["50000:4242"], allowed_group_add=[4242]), socket_path=str(sock), stack="s", host=None
    )
    assert len(risky.problems()) == 2
    with pytest.raises(Refused):
        risky.check({"User": "50000:0", "HostConfig": {"GroupAdd": ["4242"]}})
    risky.check({"User": "50000:0", "HostConfig": {}})


def _tar(content: bytes, *, link: bool = False) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("group")
        if link:
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/group2"
            tar.addfile(info)
        else:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_a_group_add_number_the_image_names_otherwise_is_found():
    assert image_group_problems(_tar(b"root:x:0:\n2000:x:105:\n"), ["2000"]) != []
    assert image_group_problems(_tar(b"root:x:0:\n2000:x:2000:\n"), ["2000"]) == []
    assert image_group_problems(_tar(b"root:x:0:\nstaff:x:2000:\n"), ["2000"]) == []
    assert image_group_problems(_tar(b"", link=True), ["2000"]) != []
    assert image_group_problems(b"not a tar", ["2000"]) != []


class _Daemon:
    """Answers an inspect with the given labels (Ownership's only daemon call)."""

    def __init__(self, labels):
        self.labels = labels

    async def call(self, method, target, body=b""):
        import json

        return 200, json.dumps({"Id": "c" * 64, "Config": {"Labels": self.labels}}).encode()


@pytest.mark.parametrize(
    ("labels", "host", "ours"),
    [
        ({"dood.managed": "true", "dood.stack": "s"}, None, True),
        ({"dood.managed": "true", "dood.stack": "s", "dood.host": "gpu-b"}, None, False),  # another host's
        ({"dood.managed": "true", "dood.stack": "s", "dood.host": "gpu-b"}, "gpu-b", True),
        ({"dood.managed": "true", "dood.stack": "s"}, "gpu-b", False),
        ({"dood.managed": "true", "dood.stack": "theirs"}, None, False),
    ],
)
def test_ownership_is_this_stack_and_this_host_both_ways(labels, host, ours):
    import asyncio

    from dood.proxy.ownership import Ownership

    ownership = Ownership(_Daemon(labels), stack="s", host=host)
    if ours:
        asyncio.run(ownership.resolve("x"))
    else:
        with pytest.raises(Refused) as refused:
            asyncio.run(ownership.resolve("x"))
        assert refused.value.status == 403
        foreign = {labels.get("dood.stack"), labels.get("dood.host")} - {"s", host, None}
        assert not any(value in refused.value.message for value in foreign)  # the others are not named
