"""dood.engine.security: the engine's security options from `/info`, and a remapping engine's host ids
(the real engine: tests/integration/test_userns.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from dood.engine.security import (
    EngineRemap,
    EngineSecurity,
    RemapIds,
    RemapUnknown,
    gid_map_of,
    host_ids,
    parse_subid,
    startup_line,
)

REMAPPED = {
    "ServerVersion": "20.10.24",
    "SecurityOptions": ["name=apparmor", "name=seccomp,profile=default", "name=userns"],
    "DockerRootDir": "/var/lib/docker/100000.100000",
}
PLAIN = {"ServerVersion": "20.10.24", "SecurityOptions": ["name=seccomp,profile=default"], "DockerRootDir": "/d"}


def test_a_remapping_engine_says_which_host_ids_its_root_is():
    security = EngineSecurity.from_info(REMAPPED)
    assert (security.userns, security.remapped_root, security.seccomp, security.apparmor) == (
        True, (100000, 100000), "default", True
    )  # fmt: skip
    assert security.summary() == (
        "user namespaces: remapped (container uid 0 = host uid 100000, gid 0 = host gid 100000); "
        "seccomp default, apparmor"
    )


def test_an_engine_without_remapping_says_container_uids_are_host_uids():
    security = EngineSecurity.from_info(PLAIN)
    assert not security.userns and security.remapped_root is None
    assert security.user_namespaces() == "not remapped (container uids are host uids; see docs/security.md)"


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["name=rootless", "name=seccomp,profile=builtin"], "rootless engine"),
        (["apparmor", "seccomp"], "not remapped"),  # API < 1.24: bare names
        (None, "not remapped"),
    ],
)
def test_other_engines(options, said):
    assert EngineSecurity.from_info({"SecurityOptions": options}).user_namespaces().startswith(said)


def test_a_data_root_without_ids_leaves_the_host_ids_unknown():
    security = EngineSecurity.from_info({**REMAPPED, "DockerRootDir": "/var/lib/docker"})
    assert security.userns and security.remapped_root is None
    assert "unknown" in security.user_namespaces()


SUBIDS = "root:1:2\ndockremap:300000:10\n# comment\ndockremap:100000:65536\nother:200000:65536\ndockremap:9:x\n"


def test_ranges_are_sorted_and_counted_on_across_them_as_dockerd_does():
    assert parse_subid(SUBIDS, "dockremap") == ((100000, 65536), (300000, 10))
    remap = RemapIds("dockremap", parse_subid(SUBIDS, "dockremap"), parse_subid(SUBIDS, "dockremap"))
    assert [remap.host_gid(g) for g in (0, 50000, 65535, 65536, 65545, 65546, -1)] == [
        100000, 150000, 165535, 300000, 300009, None, None
    ]  # fmt: skip


def test_load_checks_the_files_against_the_engine(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(SUBIDS)
    subgid.write_text(SUBIDS)
    paths = {"subuid": str(subuid), "subgid": str(subgid)}
    assert RemapIds.load((100000, 100000), **paths).host_uid(50000) == 150000
    with pytest.raises(RemapUnknown, match=r"to host 100000:100000, and the engine's DockerRootDir says 5:5"):
        RemapIds.load((5, 5), **paths)
    with pytest.raises(RemapUnknown, match=r"no ranges for 'nobody': name the user of the engine's --userns-remap"):
        RemapIds.load((100000, 100000), user="nobody", **paths)
    with pytest.raises(RemapUnknown, match=r"cannot be read .*give this process the host's"):
        RemapIds.load((100000, 100000), subuid=str(tmp_path / "missing"), subgid=str(subgid))


class FakeDaemon:
    endpoint = "unix:///run/fake.sock"

    def __init__(self, info=None, error: Exception | None = None) -> None:
        self.info, self.error = info, error
        self.calls = 0

    async def call(self, method: str, target: str):
        assert (method, target) == ("GET", "/info")
        self.calls += 1
        if self.error:
            raise self.error
        return 200, json.dumps(self.info).encode()


def test_the_startup_line_never_fails_the_start():
    line = asyncio.run(startup_line(FakeDaemon(REMAPPED)))
    assert line.startswith("Engine unix:///run/fake.sock (Docker 20.10.24): user namespaces: remapped (")
    down = asyncio.run(startup_line(FakeDaemon(error=OSError("refused"))))
    assert down == "Engine unix:///run/fake.sock: /info did not answer (refused); its security options are unknown"


def test_no_map_without_remapping_and_no_guess_when_the_daemon_is_silent():
    assert asyncio.run(host_ids(FakeDaemon(PLAIN))) is None
    with pytest.raises(RemapUnknown, match="did not answer"):
        asyncio.run(host_ids(FakeDaemon(error=OSError("refused"))))


def test_the_remap_is_asked_again_after_its_age_and_a_failure_is_never_kept():
    daemon = FakeDaemon(PLAIN)
    remap = EngineRemap(daemon, max_age=60)
    assert asyncio.run(remap.get()) is None and asyncio.run(remap.get()) is None
    assert daemon.calls == 1, "a second create within max_age reads no /info"
    failing = EngineRemap(FakeDaemon(error=OSError("refused")), max_age=60)
    for _ in range(2):
        with pytest.raises(RemapUnknown, match="did not answer"):
            asyncio.run(failing.get())
    assert failing.daemon.calls == 2, "a failure is asked again at once"
    aged = EngineRemap(daemon, max_age=0)
    asyncio.run(aged.get())
    asyncio.run(aged.get())
    assert daemon.calls == 3


def test_the_gid_map_of_an_info_already_read(tmp_path):
    (tmp_path / "subuid").write_text(SUBIDS)
    (tmp_path / "subgid").write_text(SUBIDS)
    files = {"subuid": str(tmp_path / "subuid"), "subgid": str(tmp_path / "subgid")}
    assert gid_map_of(PLAIN, **files) is None
    host_gid = gid_map_of(REMAPPED, **files)
    assert host_gid is not None and (host_gid(0), host_gid(50000)) == (100000, 150000)
