"""The container policy: one pure function over the Docker create body, checked case-insensitively."""

from __future__ import annotations

import pickle
import subprocess
import sys

import docker
import pytest
from docker.types import DeviceRequest, DriverConfig, Mount

from dood.config.model import load_policy, parse_policy
from dood.policy import (
    MalformedBody,
    Policy,
    canonical_create_body,
    check,
    parse_json,
    violations,
)

API = docker.APIClient(version="1.41")  # no connection is made with an explicit version
OK_IMAGE = "dood-ml-example:latest"


def body(image: str = OK_IMAGE, **host_config) -> dict:
    """A create body exactly as the docker SDK (and so the operator) builds it."""
    return API.create_container_config(
        image=image,
        command=["true"],
        user="50000:0",
        labels={"dood.managed": "true"},
        host_config=API.create_host_config(**host_config),
    )


def rules(found) -> list[tuple[str, str]]:
    return [(v.field, v.rule) for v in found]


# --- what the operator sends passes with the defaults ---


def test_operator_shaped_body_passes_a_policy_listing_its_volume_and_network():
    sent = body(
        mounts=[
            Mount(target="/dood/run", source="/tmp/dood-runs/dood-x-t1-abc", type="bind"),
            Mount(target="/dood/input", source="/tmp/dood/data", type="bind", read_only=True),
            Mount(target="/cache", source="pip-cache", type="volume"),
        ],
        network_mode="dood-net",
        nano_cpus=2_000_000_000,
        mem_limit="2g",
        shm_size="1g",
    )
    policy = Policy(allowed_volumes=["pip-cache"], allowed_networks=["dood-net"])
    assert violations(sent, policy) == []
    check(sent, policy)  # does not raise


def test_defaults_are_documented_and_safe():
    policy = Policy()
    assert policy.allowed_images == ("*",)
    assert policy.allowed_host_roots == ("/tmp/dood", "/tmp/dood-runs")
    assert policy.allowed_capabilities == ()
    assert policy.allow_gpus is False
    assert policy.allowed_host_ports is None
    for name, field in Policy.model_fields.items():
        assert field.description, f"policy.{name} has no description"


# --- every forbidden thing, named by field and rule ---


@pytest.mark.parametrize(
    ("host_config", "expected"),
    [
        ({"privileged": True}, [("HostConfig.Privileged", "privileged")]),
        ({"cap_add": ["SYS_ADMIN"]}, [("HostConfig.CapAdd[0]", "capability")]),
        (
            {"cap_add": ["cap_sys_admin", "NET_RAW"]},
            [("HostConfig.CapAdd[0]", "capability"), ("HostConfig.CapAdd[1]", "capability")],
        ),
        ({"pid_mode": "host"}, [("HostConfig.PidMode", "host-namespace")]),
        ({"pid_mode": "container:abc"}, [("HostConfig.PidMode", "host-namespace")]),
        ({"ipc_mode": "host"}, [("HostConfig.IpcMode", "host-namespace")]),
        ({"uts_mode": "host"}, [("HostConfig.UTSMode", "host-namespace")]),
        ({"userns_mode": "host"}, [("HostConfig.UsernsMode", "host-namespace")]),
        ({"cgroupns": "host"}, [("HostConfig.CgroupnsMode", "host-namespace")]),
        ({"network_mode": "host"}, [("HostConfig.NetworkMode", "host-namespace")]),
        ({"network_mode": "container:other"}, [("HostConfig.NetworkMode", "host-namespace")]),
        ({"devices": ["/dev/sda:/dev/sda:rwm"]}, [("HostConfig.Devices[0]", "device")]),
        ({"device_cgroup_rules": ["c 1:3 mr"]}, [("HostConfig.DeviceCgroupRules[0]", "device")]),
        ({"security_opt": ["seccomp=unconfined"]}, [("HostConfig.SecurityOpt[0]", "security-opt")]),
        ({"security_opt": ["apparmor=unconfined"]}, [("HostConfig.SecurityOpt[0]", "security-opt")]),
        ({"security_opt": ["label=disable", "no-new-privileges"]}, [("HostConfig.SecurityOpt[0]", "security-opt")]),
        (
            {"security_opt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']},
            [("HostConfig.SecurityOpt[0]", "security-opt")],
        ),
        ({"volumes_from": ["other"]}, [("HostConfig.VolumesFrom", "volumes-from")]),
        ({"links": {"db": "db"}}, [("HostConfig.Links", "links")]),
        ({"sysctls": {"net.ipv4.ip_forward": "1"}}, [("HostConfig.Sysctls", "sysctls")]),
        ({"cgroup_parent": "/system.slice"}, [("HostConfig.CgroupParent", "cgroup")]),
        ({"runtime": "kata"}, [("HostConfig.Runtime", "runtime")]),
        ({"oom_kill_disable": True}, [("HostConfig.OomKillDisable", "oom")]),
        ({"oom_score_adj": -500}, [("HostConfig.OomScoreAdj", "oom")]),
        (
            {"log_config": {"type": "syslog", "config": {"syslog-address": "tcp://10.0.0.1:514"}}},
            [("HostConfig.LogConfig.Type", "log-driver")],
        ),
        ({"publish_all_ports": True}, [("HostConfig.PublishAllPorts", "port")]),
        ({"port_bindings": {8080: ("127.0.0.1", 8080)}}, [("HostConfig.PortBindings['8080/tcp'][0]", "port")]),
        ({"volume_driver": "convoy"}, [("HostConfig.VolumeDriver", "volume-driver")]),
        (
            {"device_requests": [DeviceRequest(count=1, capabilities=[["gpu"]])]},
            [("HostConfig.DeviceRequests[0]", "gpu")],
        ),
    ],
)
def test_forbidden_host_config(host_config, expected):
    assert rules(violations(body(**host_config), Policy())) == expected


@pytest.mark.parametrize(
    ("binds", "rule"),
    [
        (["/:/host"], "system-path"),
        (["/etc:/etc:ro"], "system-path"),
        (["/var:/var"], "system-path"),  # contains /var/run and /var/lib/docker
        (["/var/run/docker.sock:/var/run/docker.sock"], "docker-socket"),
        (["/run/user/0/docker.sock:/d.sock"], "docker-socket"),
        (["/tmp/dood/proxy.sock:/p.sock"], "docker-socket"),
        (["/var/lib/docker/volumes:/v"], "system-path"),
        (["/proc:/p"], "system-path"),
        (["/tmp/dood/../../etc:/e"], "system-path"),
        (["//etc:/e"], "system-path"),
        (["/home/user/.ssh:/ssh:ro"], "bind-root"),
        (["/tmp/doodle:/x"], "bind-root"),  # a prefix of a root's name is not under it
        (["/tmp/dood/x:/x:rshared"], "propagation"),
    ],
)
def test_forbidden_binds(binds, rule):
    assert rules(violations(body(binds=binds), Policy())) == [("HostConfig.Binds[0]", rule)]


def test_binds_under_allowed_roots_and_listed_named_volumes_pass():
    sent = body(
        binds=["/tmp/dood/data:/data:ro", "/tmp/dood-runs/x:/dood/run", "cache:/cache", "/tmp/dood/./a/../b:/b"]
    )
    assert violations(sent, Policy(allowed_volumes=["cache"])) == []


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        (
            Mount(target="/s", source="/var/run/docker.sock", type="bind"),
            ("HostConfig.Mounts[0].Source", "docker-socket"),
        ),
        (Mount(target="/h", source="/", type="bind"), ("HostConfig.Mounts[0].Source", "system-path")),
        (Mount(target="/h", source="/srv/other", type="bind"), ("HostConfig.Mounts[0].Source", "bind-root")),
        (
            Mount(
                target="/v",
                source=None,
                type="volume",
                driver_config=DriverConfig("local", {"o": "bind", "device": "/etc"}),
            ),
            ("HostConfig.Mounts[0].VolumeOptions.DriverConfig", "volume-driver"),
        ),
        (
            Mount(target="/x", source="/tmp/dood/x", type="bind", propagation="rshared"),
            ("HostConfig.Mounts[0].BindOptions.Propagation", "propagation"),
        ),
    ],
)
def test_forbidden_mounts(mount, expected):
    assert rules(violations(body(mounts=[mount]), Policy())) == [expected]


def test_mount_types_other_than_bind_volume_tmpfs_are_refused():
    sent = {
        "Image": OK_IMAGE,
        "User": "50000:0",
        "HostConfig": {"Mounts": [{"Type": "image", "Source": "other", "Target": "/x"}]},
    }
    assert rules(violations(sent, Policy())) == [("HostConfig.Mounts[0].Type", "mount-type")]
    tmpfs = body(mounts=[Mount(target="/scratch", source="", type="tmpfs")])
    assert violations(tmpfs, Policy()) == []


def test_read_only_roots_require_read_only_mounts():
    policy = Policy(allowed_host_roots=["/srv/ml"], read_only_host_roots=["/srv/ml/data"])
    assert violations(body(binds=["/srv/ml/data/x:/in:ro", "/srv/ml/out:/out"]), policy) == []
    assert (
        violations(body(mounts=[Mount(target="/in", source="/srv/ml/data", type="bind", read_only=True)]), policy) == []
    )
    found = violations(
        body(binds=["/srv/ml/data:/in"], mounts=[Mount(target="/in2", source="/srv/ml/data/y", type="bind")]), policy
    )
    assert rules(found) == [
        ("HostConfig.Binds[0]", "bind-read-only"),
        ("HostConfig.Mounts[0].Source", "bind-read-only"),
    ]


def test_bind_sources_are_checked_lexically_here_and_on_the_filesystem_by_hostpaths(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to("/etc")
    sent = body(binds=[f"{root}/etc:/e", f"{root}/{'../' * 40}etc:/x"])
    found = violations(sent, Policy(allowed_host_roots=[str(root)]))
    assert rules(found) == [("HostConfig.Binds[1]", "system-path")]  # '..' is cleaned; the link is hostpaths'


@pytest.mark.parametrize(
    ("user", "allowed"),
    [
        ("50000:0", True),
        ("1000:1000", True),
        ("50000", False),  # the image's /etc/passwd would pick the group, its /etc/group add supplementary ones
        ("1000", False),
        ("50001:0", False),  # not listed: an allow-list, whoever it is (here the compose proxy's uid)
        ("0", False),
        ("0:0", False),
        ("root", False),
        ("airflow", False),
        ("", False),
        (None, False),
        (1000, False),
        ("1000:staff", False),
        (" 50000:0", False),
        ("050000:0", False),  # the same uid to Go, but only the canonical spelling is an identity
        ("50000:00", False),
        ("50000:0:0", False),
        ("4294967296:0", False),
        ("50000:4294967295", False),
    ],
)
def test_containers_run_only_as_an_allowed_identity(user, allowed):
    sent = {**body(), "User": user}
    policy = Policy(allowed_users=["50000:0", "1000:1000"])
    found = violations(sent, policy)
    assert (found == []) is allowed, found
    if not allowed:
        assert rules(found) == [("User", "user")]
        assert "policy.allowed_users ['50000:0', '1000:1000']" in found[0].message
    assert violations(sent, Policy(allow_root_user=True)) == []


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([], []),
        (["2000"], []),
        (["2000", "2001"], [("HostConfig.GroupAdd[1]", "group")]),
        (["999"], [("HostConfig.GroupAdd[0]", "group")]),  # e.g. the Docker socket's group
        (["docker"], [("HostConfig.GroupAdd[0]", "group")]),  # a name: the image's /etc/group decides
        (["02000"], [("HostConfig.GroupAdd[0]", "group")]),
        ([2000], [("HostConfig.GroupAdd[0]", "group")]),
        ("2000", [("HostConfig.GroupAdd", "malformed")]),
    ],
)
def test_supplementary_groups_are_allow_listed(groups, expected):
    sent = {**body(), "HostConfig": {"GroupAdd": groups}}
    assert rules(violations(sent, Policy(allowed_group_add=[2000]))) == expected
    if groups:  # none by default
        assert ("HostConfig.GroupAdd[0]", "group") in rules(violations(sent, Policy())) or expected


def test_the_policy_never_lists_root_and_needs_explicit_groups():
    with pytest.raises(ValueError, match="uid 0 is root"):
        Policy(allowed_users=["0:0"])
    assert Policy(allowed_users=["0:0"], allow_root_user=True).allowed_users == ("0:0",)
    for bad in (["50000"], ["airflow:0"], ["1:4294967296"], []):
        with pytest.raises(ValueError):
            Policy(allowed_users=bad)


def test_process_and_open_file_limits_are_bounded_and_other_ulimits_refused():
    policy = Policy(max_pids=100, max_nofile=4096)

    def found(**host):
        return rules(violations({**body(), "HostConfig": host}, policy))

    assert found() == [] and found(PidsLimit=100) == [] and found(PidsLimit=5) == []
    for pids in (-1, 0, 101, True, "50"):
        assert found(PidsLimit=pids) == [("HostConfig.PidsLimit", "pids-limit")], pids
    assert found(Ulimits=[{"Name": "nofile", "Soft": 1024, "Hard": 4096}]) == []
    assert found(Ulimits=[{"Name": "nofile", "Soft": 1024, "Hard": 4097}]) == [("HostConfig.Ulimits[0]", "ulimit")]
    assert found(Ulimits=[{"Name": "nofile", "Soft": 4096, "Hard": 1024}]) == [("HostConfig.Ulimits[0]", "ulimit")]
    for name in ("nproc", "memlock", "core", "NOFILE"):
        assert found(Ulimits=[{"Name": name, "Soft": 1, "Hard": 1}]) == [("HostConfig.Ulimits[0]", "ulimit")]


def test_defaults_give_a_process_limit_and_the_default_memory():
    from dood.policy import apply_defaults

    sent = apply_defaults({"Image": OK_IMAGE, "HostConfig": {}}, Policy(default_memory="1g"))
    assert sent["HostConfig"] == {"CgroupnsMode": "private", "PidsLimit": 4096, "Memory": 1024**3}
    kept = apply_defaults({"HostConfig": {"PidsLimit": 10, "Memory": 5}}, Policy(default_memory="1g"))
    assert kept["HostConfig"] == {"CgroupnsMode": "private", "PidsLimit": 10, "Memory": 5}
    assert apply_defaults({"HostConfig": {}}, Policy())["HostConfig"] == {"CgroupnsMode": "private", "PidsLimit": 4096}
    with pytest.raises(ValueError, match="exceeds max_memory"):
        Policy(default_memory="2g", max_memory="1g")


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("/tmp/dood/x:/x", []),
        ("/tmp/dood/x:/x:ro", []),
        ("/tmp/dood/x:/x:rw,rprivate", []),
        ("/tmp/dood/x:/x:z", [("HostConfig.Binds[0]", "bind-option")]),
        ("/tmp/dood/x:/x:Z", [("HostConfig.Binds[0]", "bind-option")]),
        ("/tmp/dood/x:/x:ro,z", [("HostConfig.Binds[0]", "bind-option")]),
        ("/tmp/dood/x:/x:RO", [("HostConfig.Binds[0]", "bind-option")]),
        ("/tmp/dood/x:/x:nocopy", [("HostConfig.Binds[0]", "bind-option")]),
        ("/tmp/dood/x:/x:rshared", [("HostConfig.Binds[0]", "propagation")]),
    ],
)
def test_bind_options_are_allow_listed(bind, expected):
    assert rules(violations({**body(), "HostConfig": {"Binds": [bind]}}, Policy())) == expected


def test_bind_mount_options_are_allow_listed():
    def found(options):
        mount = {"Type": "bind", "Source": "/tmp/dood/x", "Target": "/x", "BindOptions": options}
        return rules(violations({**body(), "HostConfig": {"Mounts": [mount]}}, Policy()))

    assert found({"Propagation": "rprivate", "NonRecursive": True}) == []
    assert found({"Propagation": "rslave"}) == [("HostConfig.Mounts[0].BindOptions.Propagation", "propagation")]
    assert found({"ReadOnlyNonRecursive": True}) == [
        ("HostConfig.Mounts[0].BindOptions.ReadOnlyNonRecursive", "bind-option")
    ]


def test_images_match_the_allowed_patterns():
    policy = Policy(allowed_images=["dood-test-busybox:*", "registry.example.com/ml/*:*", "python:3.11-*"])
    assert policy.image_allowed("dood-test-busybox")
    assert policy.image_allowed("dood-test-busybox:latest")
    assert policy.image_allowed("registry.example.com/ml/train:1.4")
    assert policy.image_allowed("python:3.11-slim")
    assert not policy.image_allowed("python:3.12-slim")
    assert not policy.image_allowed("busybox")
    assert not policy.image_allowed("registry.example.com/other/x:1")
    assert rules(violations(body(image="alpine"), policy)) == [("Image", "image")]
    assert rules(violations({"User": "50000:0", "HostConfig": {}}, policy)) == [("Image", "image")]


def test_gpus_cpus_and_memory_limits():
    gpus = [DeviceRequest(count=2, capabilities=[["gpu"]])]
    assert violations(body(device_requests=gpus), Policy(allow_gpus=True)) == []
    assert rules(violations(body(device_requests=gpus), Policy(allow_gpus=True, max_gpus=1))) == [
        ("HostConfig.DeviceRequests[0]", "gpu")
    ]
    every = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    assert (
        "asks for all GPUs" in violations(body(device_requests=every), Policy(allow_gpus=True, max_gpus=4))[0].message
    )
    other = [DeviceRequest(count=1, capabilities=[["compute"]], driver="other")]
    assert [v.field for v in violations(body(device_requests=other), Policy(allow_gpus=True))] == [
        "HostConfig.DeviceRequests[0].Driver",
        "HostConfig.DeviceRequests[0].Capabilities",
    ]
    limited = Policy(max_cpus=2, max_memory="4g")
    assert violations(body(nano_cpus=2_000_000_000, mem_limit="4g"), limited) == []
    assert rules(violations(body(), limited)) == [
        ("HostConfig.NanoCpus", "cpu-limit"),
        ("HostConfig.Memory", "memory-limit"),
    ]
    assert rules(violations(body(cpu_quota=300_000, cpu_period=100_000, mem_limit="8g"), limited)) == [
        ("HostConfig.NanoCpus", "cpu-limit"),
        ("HostConfig.Memory", "memory-limit"),
    ]


def test_published_ports_within_the_allowed_range_and_addresses():
    policy = Policy(allowed_host_ports=(8800, 8899))
    assert violations(body(port_bindings={80: ("127.0.0.1", 8800)}), policy) == []
    assert [v.field for v in violations(body(port_bindings={80: 8800, 81: ("127.0.0.1", 9000)}), policy)] == [
        "HostConfig.PortBindings['80/tcp'][0].HostIp",  # all interfaces
        "HostConfig.PortBindings['81/tcp'][0].HostPort",
    ]
    assert [v.field for v in violations(body(port_bindings={80: ("127.0.0.1", None)}), policy)] == [
        "HostConfig.PortBindings['80/tcp'][0].HostPort"  # a random port: outside any promise
    ]


def test_networking_config_cannot_join_the_host_or_link():
    sent = {
        "Image": OK_IMAGE,
        "User": "50000:0",
        "NetworkingConfig": {"EndpointsConfig": {"host": {}, "dood-net": {"Links": ["db:db"], "Aliases": ["a"]}}},
    }
    assert rules(violations(sent, Policy(allowed_networks=("dood-net",)))) == [
        ("NetworkingConfig.EndpointsConfig['host']", "host-namespace"),
        ("NetworkingConfig.EndpointsConfig['dood-net'].Links", "links"),
    ]


def test_masked_paths_and_annotations_cannot_be_overridden():
    sent = {
        "Image": OK_IMAGE,
        "User": "50000:0",
        "HostConfig": {"MaskedPaths": [], "ReadonlyPaths": [], "Annotations": {"a": "b"}},
    }
    assert [v.rule for v in violations(sent, Policy())] == ["masked-paths", "masked-paths", "annotations"]


# --- keys as Go's encoding/json reads them ---


def test_keys_match_case_insensitively_and_are_canonicalised():
    sent = {
        "image": OK_IMAGE,
        "user": "50000:0",
        "hostconfig": {"PRIVILEGED": True, "capadd": "SYS_ADMIN", "binds": ["/:/h"]},
    }
    assert rules(violations(sent, Policy())) == [
        ("HostConfig.Privileged", "privileged"),
        ("HostConfig.CapAdd[0]", "capability"),  # StrSlice: a lone string is a list of one
        ("HostConfig.Binds[0]", "system-path"),
    ]
    canonical, problems = canonical_create_body(
        {"image": "x", "labels": {"Team": "a", "team": "b"}, "hostconfig": {"logconfig": {"type": "json-file"}}}
    )
    assert problems == []
    assert canonical == {
        "Image": "x",
        "Labels": {"Team": "a", "team": "b"},
        "HostConfig": {"LogConfig": {"Type": "json-file"}},
    }


def test_keys_given_twice_under_two_spellings_are_refused():
    found = violations(
        {"Image": OK_IMAGE, "User": "50000:0", "HostConfig": {"Privileged": False, "privileged": True}}, Policy()
    )
    assert rules(found) == [("HostConfig.Privileged", "duplicate-key")]
    assert found[0].structural
    assert "'Privileged' and 'privileged'" in found[0].message


def test_repeated_keys_are_refused_when_parsing():
    with pytest.raises(MalformedBody, match="'HostConfig' is given twice"):
        parse_json(b'{"Image": "x", "HostConfig": {}, "HostConfig": {"Privileged": true}}')
    with pytest.raises(MalformedBody, match="given twice"):
        parse_json(b'{"HostConfig": {"CapAdd": [], "CapAdd": ["SYS_ADMIN"]}}')
    with pytest.raises(MalformedBody, match="not valid JSON"):
        parse_json(b'{"HostConfig": {"Memory": NaN}}')
    with pytest.raises(MalformedBody, match="not valid JSON"):
        parse_json(b"{'Image': 1}")


def test_host_config_fields_at_the_top_level_are_refused():
    # The daemon honours a top-level HostConfig when no "HostConfig" object is sent.
    found = violations({"Image": OK_IMAGE, "User": "50000:0", "Privileged": True, "binds": ["/:/h"]}, Policy())
    assert rules(found) == [("Privileged", "top-level-host-config"), ("binds", "top-level-host-config")]
    # ...but the nulls the docker SDK sends there ("Runtime": None) are dropped quietly.
    assert violations({"Image": OK_IMAGE, "User": "50000:0", "Runtime": None, "Cpuset": None}, Policy()) == []


@pytest.mark.parametrize("key", ["Prıvileged", "\u212aernelMemory", "CapAdd\u017f", "Privileged\u200b"])
def test_non_ascii_field_names_are_refused(key):
    # Go folds 'ı'->'I', Kelvin sign->'K', long s->'S' when matching field names.
    found = violations({"Image": OK_IMAGE, "User": "50000:0", "HostConfig": {key: True}}, Policy())
    assert [v.rule for v in found] == ["non-ascii-key"]


def test_unknown_fields_and_wrong_shapes_are_refused():
    found = violations(
        {"Image": OK_IMAGE, "User": "50000:0", "Bogus": 1, "HostConfig": {"InitPath": "/x", "Mounts": {"a": 1}}},
        Policy(),
    )
    assert rules(found) == [
        ("Bogus", "unknown-field"),
        ("HostConfig.InitPath", "unknown-field"),
        ("HostConfig.Mounts", "malformed"),
    ]
    assert rules(violations([], Policy())) == [("<body>", "malformed")]
    assert [v.rule for v in violations({"Image": OK_IMAGE, "User": "50000:0", "HostConfig": []}, Policy())] == [
        "malformed"
    ]


# --- raising, loading ---


def test_check_lists_every_violation_in_one_error():
    from dood.exceptions import DoodError
    from dood.policy import PolicyViolation

    sent = body(image="evil", privileged=True, binds=["/:/h"], cap_add=["SYS_ADMIN"])
    with pytest.raises(PolicyViolation) as caught:
        check(sent, Policy(allowed_images=["dood-*"]), subject="Task train")
    error = caught.value
    assert isinstance(error, DoodError)
    assert [v.field for v in error.violations] == [
        "Image",
        "HostConfig.Privileged",
        "HostConfig.CapAdd[0]",
        "HostConfig.Binds[0]",
    ]
    assert str(error).startswith("Task train breaks the dood policy (4 violations):")
    assert "HostConfig.Binds[0]: '/' is or contains the system path /" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is PolicyViolation and copy.violations == error.violations


def test_importing_the_policy_does_not_import_airflow():
    code = "import sys, dood.policy, dood.proxy.server; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"allowed_host_roots": ["/"]}, "system path /"),
        ({"allowed_host_roots": ["/var"]}, "system path /var/run"),
        ({"allowed_host_roots": ["data"]}, "absolute host path"),
        ({"allowed_capabilities": ["SYS_ADMIN"]}, "never allowed"),
        ({"allowed_capabilities": ["all"]}, "never allowed"),
        ({"read_only_host_roots": ["/srv/x"]}, "outside allowed_host_roots"),
        ({"allowed_host_ports": [9000, 8000]}, "first <= last"),
        ({"max_memory": "lots"}, "4g"),
        ({"privileged": True}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_policies_name_the_field(data, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_policy(data, source="dood.yaml")
    assert "policy." in str(caught.value)


def test_load_policy_reads_the_policy_section(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ROOT", "/srv/ml")
    config = tmp_path / "dood.yaml"
    config.write_text(
        "runs_root: /tmp/dood/runs\n"
        "policy:\n"
        "  allowed_images: ['registry.example.com/*:*']\n"
        "  allowed_host_roots: ['${ML_ROOT}', /tmp/dood]\n"
        "  allowed_capabilities: [cap_net_bind_service]\n"
        "  max_memory: 16g\n"
    )
    policy = load_policy(config)
    assert policy.allowed_host_roots == ("/srv/ml", "/tmp/dood")
    assert policy.allowed_capabilities == ("NET_BIND_SERVICE",)
    assert policy.max_memory == 16 * 1024**3
    config.write_text("runs_root: /tmp/x\n")
    assert load_policy(config) == Policy()
    with pytest.raises(ValueError, match="Cannot read"):
        load_policy(tmp_path / "missing.yaml")


# --- named volumes and networks: another workload's data or network is not ours to join ---


def _named(body_host, **policy_fields):
    from dood.policy import Policy, violations

    return violations({"Image": "img", "User": "50000:0", "HostConfig": body_host}, Policy(**policy_fields))


def test_named_volumes_need_listing_anonymous_ones_do_not():
    assert [v.rule for v in _named({"Binds": ["dood-e2e_airflow-secrets:/s"]})] == ["named-volume"]
    assert [v.rule for v in _named({"Mounts": [{"Type": "volume", "Source": "pgdata", "Target": "/pg"}]})] == [
        "named-volume"
    ]
    assert _named({"Mounts": [{"Type": "volume", "Target": "/scratch"}]}) == []
    assert _named({"Binds": ["ml-cache:/c"]}, allowed_volumes=("ml-*",)) == []


def test_networks_need_listing():
    [found] = _named({"NetworkMode": "dood-e2e_docker-api"})
    assert found.field == "HostConfig.NetworkMode" and found.rule == "network"
    assert _named({"NetworkMode": "bridge"}) == []
    assert _named({"NetworkMode": "dood-net"}, allowed_networks=("dood-net",)) == []


# --- image patterns: matched part by part, '*' never crosses '/', ':' or '@' ---


@pytest.mark.parametrize(
    ("pattern", "allowed", "refused"),
    [
        ("repo*", ["repo", "repo:latest", "repo-gpu"], ["repo:5000/evil", "repo.attacker.example/evil", "repo:1"]),
        ("repo:*", ["repo:1", "repo", "repo@sha256:" + "a" * 64], ["repo:5000/evil:1", "repo/evil:1", "repox:1"]),
        ("registry.example.com/ml/*", ["registry.example.com/ml/train"], ["registry.example.com/ml/train:1.4"]),
        (
            "registry.example.com/ml/*:*",
            ["registry.example.com/ml/train:1.4", "registry.example.com/ml/train"],
            ["registry.example.com/ml/a/b:1", "registry.example.com/ml:1", "registry.example.com.evil/ml/x:1"],
        ),
        ("python:3.11-*", ["python:3.11-slim"], ["python:3.12-slim", "python:3.11-slim@sha256:" + "a" * 64]),
        ("repo@sha256:" + "a" * 64, ["repo@sha256:" + "a" * 64, "repo:1@sha256:" + "a" * 64], ["repo:1", "repo"]),
        ("*", ["anything/at:all", "repo:5000/evil@sha256:" + "a" * 64], []),
        ("*:*", ["busybox:1"], ["library/busybox:1", "reg:5000/busybox:1"]),
    ],
)
def test_image_patterns_match_part_by_part(pattern, allowed, refused):
    policy = Policy(allowed_images=[pattern])
    for image in allowed:
        assert policy.image_allowed(image), image
    for image in refused:
        assert not policy.image_allowed(image), image


def test_unreadable_references_match_no_pattern():
    policy = Policy(allowed_images=["repo:*", "repo@*"])
    for image in ("repo@", "repo@a@b", ":1", "repo:"):
        assert not policy.image_allowed(image), image


def test_login_registries_are_the_ones_named_without_a_wildcard():
    policy = Policy(
        allowed_images=["Registry.Example.com/ml/*:*", "reg:5000/x", "*.example.org/x:*", "localhost/y", "busybox:*"]
    )
    assert policy.login_registries() == {"registry.example.com", "reg:5000", "localhost"}
    assert Policy().login_registries() == frozenset()


# --- fixed device rules: block-IO device paths, GPUs only through DeviceRequests ---


@pytest.mark.parametrize(
    "field",
    ["BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"],
)
def test_block_io_device_paths_are_refused(field):
    entry = {"Path": "/dev/sda", "Weight": 10} if field == "BlkioWeightDevice" else {"Path": "/dev/sda", "Rate": 1}
    found = violations({"Image": OK_IMAGE, "User": "50000:0", "HostConfig": {field: [entry]}}, Policy())
    assert rules(found) == [(f"HostConfig.{field}", "device")]
    assert field in found[0].message
    assert violations({"Image": OK_IMAGE, "User": "50000:0", "HostConfig": {field: []}}, Policy()) == []


def test_gpus_come_only_from_device_requests():
    gpus = Policy(allow_gpus=True, max_gpus=1)
    one = [DeviceRequest(count=1, capabilities=[["gpu"]])]
    assert violations(body(device_requests=one), gpus) == []
    nvidia = body(runtime="nvidia")
    nvidia["Env"] = ["NVIDIA_VISIBLE_DEVICES=all"]
    assert rules(violations(nvidia, gpus)) == [("Env[0]", "gpu"), ("HostConfig.Runtime", "runtime")]
    none_asked = body(device_requests=[DeviceRequest(count=0, capabilities=[["gpu"]])])
    none_asked["Env"] = ["CUDA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=all"]
    assert rules(violations(none_asked, gpus)) == [("HostConfig.DeviceRequests[0]", "gpu"), ("Env[1]", "gpu")]
    for name in ("NVIDIA_DRIVER_CAPABILITIES=all", "NVIDIA_REQUIRE_CUDA=cuda>=9", "NVIDIA_MIG_MONITOR_DEVICES=all"):
        sent = body(device_requests=one)
        sent["Env"] = ["PATH=/bin", name, "NVIDIA_DISABLE_REQUIRE"]
        assert rules(violations(sent, gpus)) == [("Env[1]", "gpu"), ("Env[2]", "gpu")]
    assert rules(violations(body(runtime="nvidia"), Policy(allow_gpus=True))) == [("HostConfig.Runtime", "runtime")]


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([{"Count": -1}], [("HostConfig.DeviceRequests[0]", "gpu")]),
        ([{"DeviceIDs": ["0", "1"]}], [("HostConfig.DeviceRequests[0]", "gpu")]),
        ([{"DeviceIDs": ["0,1"]}], [("HostConfig.DeviceRequests[0]", "gpu")]),  # the engine joins with ','
        ([{"DeviceIDs": ["all"]}], [("HostConfig.DeviceRequests[0]", "gpu")]),
        ([{"Count": 1}, {"DeviceIDs": ["1"]}], [("HostConfig.DeviceRequests", "gpu")]),
        ([{"Count": True}], [("HostConfig.DeviceRequests[0]", "gpu")]),
        ([{"DeviceIDs": ["GPU-8d5e7f1a"]}], []),
    ],
)
def test_max_gpus_counts_all_and_device_ids(requests, expected):
    host = {"DeviceRequests": [{"Capabilities": [["gpu"]], **request} for request in requests]}
    sent = {"Image": OK_IMAGE, "User": "50000:0", "HostConfig": host}
    found = violations(sent, Policy(allow_gpus=True, max_gpus=1))
    assert rules(found) == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"Binds": ["/tmp/dood/a:/w", "/tmp/dood/b:/x"]}, []),
        ({"Binds": ["/tmp/dood/a:/w", "/tmp/dood/b:/w/pwned"]}, [("HostConfig.Binds[1]", "nested-mount")]),
        ({"Binds": ["/tmp/dood/a:/w", "/tmp/dood/b:/w/./d//pwned:ro"]}, [("HostConfig.Binds[1]", "nested-mount")]),
        ({"Binds": ["/tmp/dood/a:/w/", "/tmp/dood/b:/w/x/../y"]}, [("HostConfig.Binds[1]", "nested-mount")]),
        ({"Binds": ["/tmp/dood/a:/w", "/w/anon"]}, [("HostConfig.Binds[1]", "nested-mount")]),
        ({"Binds": ["/tmp/dood/a:/w"], "Tmpfs": {"/w/t": "size=1m"}}, [("HostConfig.Tmpfs['/w/t']", "nested-mount")]),
        (
            {"Binds": ["/tmp/dood/a:/w"], "Mounts": [{"Type": "volume", "Target": "/w/v"}]},
            [("HostConfig.Mounts[0].Target", "nested-mount")],
        ),
        (
            {"Mounts": [{"Type": "bind", "Source": "/tmp/dood/a", "Target": "/w"}], "Binds": ["/tmp/dood/b:/w/in"]},
            [("HostConfig.Binds[0]", "nested-mount")],
        ),
        ({"Binds": ["pip-cache:/cache", "/tmp/dood/a:/cache/x"]}, []),  # inside a volume: Docker's own directory
        ({"Tmpfs": {"/t": ""}, "Binds": ["/tmp/dood/a:/t/x"]}, []),  # a bind on a tmpfs: nothing of the host's
    ],
)
def test_no_mount_stands_inside_a_bind(extra, expected):
    """runc makes a missing mount point, as root, in whatever is mounted above it: inside a bind, that is the
    host directory (a read-only root, a champion's directory), and symlinks raced in a leaf steer it anywhere."""
    sent = {**body(), "HostConfig": extra}
    assert rules(violations(sent, Policy(allowed_volumes=["pip-cache"]))) == expected


@pytest.mark.parametrize(
    ("workdir", "ok"),
    [
        ("/dood/work", True),
        ("/w", True),
        ("/w/sub", False),
        ("/proc/self/fd/7", False),
        ("/dev/shm", False),
        ("x", False),
    ],
)
def test_the_working_directory_stays_off_binds_and_kernel_views(workdir, ok):
    sent = {**body(), "WorkingDir": workdir, "HostConfig": {"Binds": ["/tmp/dood/a:/w"]}}
    assert (rules(violations(sent, Policy())) == []) is ok
