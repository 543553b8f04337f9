"""Several Docker hosts in one config: the host models, the view of one host ($DOOD_HOST), placement of steps
(queue and pool), and the refusal of a pipeline whose steps land on hosts without a common data root."""

from __future__ import annotations

import pytest

from dood.config.model import HOST_ENV_VAR, load_config, parse_config
from dood.config.placement import place, pools, worker_queues
from dood.exceptions import DoodConfigError

TLS = {"tls_ca_cert": "/certs/ca.pem", "tls_client_cert": "/certs/cert.pem", "tls_client_key": "/certs/key.pem"}
SHARED = [{"airflow_path": "/opt/dood", "host_path": "/srv/dood"}]
STEP = {"image": "img", "command": ["run"]}


def hosts(**overrides):
    value = {
        "a": {"docker": {"url": "tcp://dood-proxy:2375"}, "mount_map": SHARED},
        "b": {
            "docker": {"url": "tcp://gpu-b.example.com:2376", **TLS},
            "local_docker": {"url": "unix:///run/dood/proxy.sock"},
            "labels": {"gpu": "a100"},
            "pool_slots": 4,
            "gpus": {"devices": ["0", "1"]},
            "mount_map": [{"airflow_path": "/opt/dood", "host_path": "/mnt/nfs/dood"}],
        },
        "c": {"docker": {"url": "tcp://gpu-c.example.com:2376", **TLS}, "labels": {"gpu": "a100"}, "queue": "box-c"},
    }
    value.update(overrides)
    return value


def pipeline(**steps):
    all_steps = {"prepare": dict(STEP), "train": dict(STEP), "evaluate": dict(STEP)}
    for name, placement in steps.items():
        all_steps[name] = {**STEP, **placement}
    return {
        "data_root": "/opt/dood/data",
        "model_root": "/opt/dood/models",
        "artifact_root": "/opt/dood/artifacts",
        "steps": all_steps,
    }


def config(**extra):
    return parse_config({"hosts": hosts(), "mount_map": SHARED, **extra})


# --- the models ---


def test_the_view_of_a_host_takes_its_proxy_mount_map_and_gpus():
    cfg = config(gpus={"devices": ["7"]})
    b = cfg.on_host("b")
    assert b.host == "b" and cfg.host is None
    assert b.docker.url == "unix:///run/dood/proxy.sock"  # the local endpoint, on the host itself
    assert b.reachable_docker.url == "tcp://gpu-b.example.com:2376"  # what another host's process uses
    assert b.reachable_docker.tls_client_cert == "/certs/cert.pem"
    assert [e.host_path for e in b.mount_map] == ["/mnt/nfs/dood"]
    assert b.gpus.devices == ("0", "1")
    c = cfg.on_host("c")
    assert c.docker.url == "tcp://gpu-c.example.com:2376"  # no local endpoint: the network one
    assert [e.host_path for e in c.mount_map] == ["/srv/dood"] and c.gpus.devices == ("7",)  # the top-level ones
    assert cfg.on_host(None) is cfg and b.on_host("b") is b


def test_load_config_gives_the_view_of_dood_host(tmp_path, monkeypatch):
    import yaml

    path = tmp_path / "dood.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts(), "mount_map": SHARED}))
    monkeypatch.delenv(HOST_ENV_VAR, raising=False)
    assert load_config(str(path)).docker.url != "unix:///run/dood/proxy.sock"  # unset: the single-host config
    monkeypatch.setenv(HOST_ENV_VAR, "b")
    assert load_config(str(path)).docker.url == "unix:///run/dood/proxy.sock"
    monkeypatch.setenv(HOST_ENV_VAR, "nope")
    with pytest.raises(
        DoodConfigError, match=r"\$DOOD_HOST='nope' names no host of the dood config \(hosts: a, b, c\)"
    ):
        load_config(str(path))


def test_dood_host_without_hosts_in_the_config_says_so():
    with pytest.raises(DoodConfigError, match="none: the config has no `hosts:`"):
        parse_config({}).on_host("a")


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (
            {"url": "tcp://b:2376", "tls_client_cert": "/c.pem"},
            "mutual TLS only: give all of tls_ca_cert .* not just tls_client_cert",
        ),
        ({"url": "tcp://b:2376", "tls_ca_cert": "/ca.pem"}, "not just tls_ca_cert \\(scripts/make-host-certs.sh"),
        ({"url": "unix:///x.sock", **TLS}, "TLS settings need a tcp:// url"),
        ({}, "hosts.b.docker.url: Field required"),
    ],
)
def test_incomplete_tls_settings_are_refused_naming_the_field(endpoint, message):
    with pytest.raises(DoodConfigError, match=message) as caught:
        parse_config({"hosts": {"b": {"docker": endpoint}}})
    assert "hosts.b.docker" in str(caught.value)


def test_host_names_and_queues_are_checked():
    with pytest.raises(DoodConfigError, match="host name 'GPU box' must match"):
        parse_config({"hosts": {"GPU box": {"docker": {"url": "unix:///x"}}}})
    with pytest.raises(DoodConfigError, match="hosts 'a' and 'b' both use queue 'dood-a'"):
        parse_config(
            {"hosts": {"a": {"docker": {"url": "unix:///x"}}, "b": {"docker": {"url": "unix:///y"}, "queue": "dood-a"}}}
        )


# --- placement: queue and pool ---


def test_one_host_gets_its_own_queue_and_pool():
    cfg = config()
    assert place(cfg.hosts, host="b").to_kwargs() == {
        "hosts": ("b",),
        "queue": "dood-b",
        "pool": "dood-b",
        "pool_slots": 4,
    }
    assert place(cfg.hosts, host="c").queue == "box-c"  # the configured queue
    assert place(cfg.hosts) is None  # nothing asked: Airflow's default queue


def test_several_hosts_share_a_group_queue_and_pool():
    cfg = config()
    by_labels = place(cfg.hosts, labels={"gpu": "a100"})
    assert by_labels.hosts == ("b", "c") and by_labels.queue == "dood-b+c" and by_labels.pool_slots == 20
    assert place(cfg.hosts, names=["c", "b"]) == by_labels


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"host": "z"}, r"unknown host\(s\) \['z'\]; the dood config's hosts are \['a', 'b', 'c'\]"),
        ({"labels": {"gpu": "h100"}}, r"host_labels \{'gpu': 'h100'\} match no host"),
        ({"host": "a", "names": ["b"]}, "give at most one of host, hosts, host_labels"),
    ],
)
def test_a_placement_that_cannot_be_met_says_why(asked, message):
    with pytest.raises(ValueError, match=message):
        place(config().hosts, **asked)


def test_worker_queues_and_pools_follow_the_pipelines():
    cfg = config(pipelines={"p": pipeline(train={"host_labels": {"gpu": "a100"}})})
    assert worker_queues("b", cfg.hosts, cfg.pipelines) == ["dood-b", "dood-b+c"]
    assert worker_queues("a", cfg.hosts, cfg.pipelines) == ["dood-a"]
    found = pools(cfg.hosts, cfg.pipelines)
    assert {name: pool["slots"] for name, pool in found.items()} == {
        "dood-a": 16,
        "dood-b": 4,
        "dood-c": 16,
        "dood-b+c": 20,
    }
    assert found["dood-b+c"] == {
        "slots": 20,
        "description": "dood: steps running on hosts b, c (queue dood-b+c, pool dood-b+c) (docs/hosts.md)",
        "include_deferred": True,  # a deferred step's container still runs on the host
    }


# --- pipelines: placements checked at parse time ---


def test_a_step_placed_on_an_unknown_host_is_refused_naming_pipeline_and_step():
    with pytest.raises(DoodConfigError, match=r"pipelines\.p: steps\.train: unknown host\(s\) \['z'\]"):
        config(pipelines={"p": pipeline(train={"host": "z"})})


def test_placement_without_hosts_is_refused():
    with pytest.raises(DoodConfigError, match="host needs hosts under `hosts:`"):
        parse_config({"pipelines": {"p": pipeline(train={"host": "b"})}})


def test_a_step_names_one_kind_of_placement():
    with pytest.raises(DoodConfigError, match="give at most one of host, hosts, host_labels"):
        config(pipelines={"p": pipeline(train={"host": "b", "host_labels": {"gpu": "a100"}})})


def test_a_pipeline_pool_beside_a_placement_is_refused():
    with pytest.raises(DoodConfigError, match="the pipeline's pool 'gpu' cannot apply too"):
        config(pipelines={"p": {**pipeline(train={"host": "b"}), "pool": "gpu"}})


def test_steps_on_hosts_sharing_the_data_root_are_accepted():
    cfg = config(pipelines={"p": pipeline(prepare={"host": "a"}, train={"host": "b"}, evaluate={"host": "a"})})
    assert cfg.pipelines["p"].steps["train"].host == "b"


def test_steps_on_hosts_without_a_common_data_root_are_refused_naming_steps_and_hosts():
    lonely = {"docker": {"url": "tcp://d:2376", **TLS}, "mount_map": [{"airflow_path": "/scratch", "host_path": "/s"}]}
    with pytest.raises(DoodConfigError) as caught:
        parse_config(
            {
                "hosts": hosts(d=lonely),
                "pipelines": {"p": pipeline(prepare={"host": "a"}, train={"host": "d"}, evaluate={"host": "a"})},
            }
        )
    message = str(caught.value)
    assert "pipelines.p: steps prepare (a), train (d), evaluate (a) run on different hosts" in message
    assert "host 'd' has no mount_map entry for data_root /opt/dood/data, model_root /opt/dood/models" in message
    assert "hosts.d.mount_map" in message


def test_an_unplaced_step_beside_placed_ones_may_land_on_any_host():
    lonely = {"docker": {"url": "tcp://d:2376", **TLS}, "mount_map": []}
    with pytest.raises(DoodConfigError, match="prepare \\(\\(default\\)/a/b/c/d\\).*host 'd' has no mount_map entry"):
        parse_config({"hosts": hosts(d=lonely), "mount_map": SHARED, "pipelines": {"p": pipeline(train={"host": "b"})}})


def test_an_unplaced_step_may_land_on_the_default_queue_s_host_which_must_share_the_data_too():
    """One GPU host beside the main one (not under `hosts:`): prepare runs on the main host, train on gpu."""
    gpu = {"gpu": hosts()["b"]}
    with pytest.raises(DoodConfigError, match="but the default queue's host \\(top-level docker\\) has no mount_map"):
        parse_config({"hosts": gpu, "pipelines": {"p": pipeline(train={"host": "gpu"})}})
    assert parse_config({"hosts": gpu, "mount_map": SHARED, "pipelines": {"p": pipeline(train={"host": "gpu"})}})


def test_a_pipeline_on_one_host_needs_no_shared_storage():
    lonely = {"docker": {"url": "tcp://d:2376", **TLS}, "mount_map": []}
    every_step = {name: {"host": "d"} for name in ("prepare", "train", "evaluate")}
    assert parse_config({"hosts": hosts(d=lonely), "pipelines": {"p": pipeline(**every_step)}})
    assert parse_config({"hosts": hosts(d=lonely), "pipelines": {"p": pipeline()}})  # unplaced: as today


def test_the_hosts_cli_prints_queues_and_pools(tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from dood.hosts import main

    path = tmp_path / "dood.yaml"
    path.write_text(
        yaml.safe_dump(
            {"hosts": hosts(), "mount_map": SHARED, "pipelines": {"p": pipeline(train={"hosts": ["b", "c"]})}}
        )
    )
    monkeypatch.setenv(HOST_ENV_VAR, "c")
    assert main(["--config", str(path), "queues"]) == 0
    assert capsys.readouterr().out.strip() == "box-c,dood-b+c"
    assert main(["--config", str(path), "pools"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"dood-a", "dood-b", "dood-c", "dood-b+c"}
    monkeypatch.delenv(HOST_ENV_VAR)
    assert main(["--config", str(path), "queues"]) == 2
    assert "name the host with --host or $DOOD_HOST" in capsys.readouterr().err


# --- the DAG factory and the operator: queue and pool per step, the wrong host refused ---


def test_the_dag_factory_gives_placed_steps_their_host_s_queue_and_pool():
    from dood.dag_factory import build_dags

    cfg = config(pipelines={"p": pipeline(prepare={"host": "a"}, train={"host_labels": {"gpu": "a100"}})})
    dag = build_dags(cfg)["dood_p"]
    placed = {t.task_id: (t.queue, t.pool) for t in dag.tasks}
    assert placed["prepare"] == ("dood-a", "dood-a")
    assert placed["train"] == ("dood-b+c", "dood-b+c")
    assert dag.get_task("train").placement.hosts == ("b", "c")
    default = dag.get_task("evaluate")
    assert default.placement is None and default.pool == "default_pool"  # unplaced: Airflow's defaults


def _config_file(tmp_path):
    import yaml

    path = tmp_path / "dood.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts(), "mount_map": SHARED}))
    return str(path)


def test_an_operator_placed_by_name_gets_queue_and_pool_and_refuses_others(tmp_path):
    from dood.operators.container import DoodContainerOperator

    path = _config_file(tmp_path)
    op = DoodContainerOperator(task_id="t", image="img", host="b", config_path=path)
    assert (op.queue, op.pool) == ("dood-b", "dood-b")
    with pytest.raises(DoodConfigError, match=r"t: queue='gpu' contradicts its placement on host b \(queue dood-b"):
        DoodContainerOperator(task_id="t", image="img", host="b", queue="gpu", config_path=path)
    with pytest.raises(DoodConfigError, match=r"t: unknown host\(s\) \['z'\]"):
        DoodContainerOperator(task_id="t", image="img", host="z", config_path=path)


def test_a_mapped_step_placed_by_name_gets_queue_and_pool_at_parse_time(tmp_path):
    """The scheduler routes a mapped task by its partial arguments; no __init__ runs before that."""
    from airflow.sdk import DAG

    from dood.operators.container import DoodContainerOperator

    path = _config_file(tmp_path)
    with DAG("mapped", schedule=None):
        mapped = DoodContainerOperator.partial(task_id="t", image="img", host="b", config_path=path).expand(
            command=[["true"], ["false"]]
        )
    assert (mapped.queue, mapped.pool) == ("dood-b", "dood-b")
    with pytest.raises(DoodConfigError, match=r"t: queue='gpu' contradicts its placement on host b"):
        DoodContainerOperator.partial(task_id="t", image="img", host="b", queue="gpu", config_path=path)


@pytest.mark.parametrize(
    ("dood_host", "where"),
    [("a", "on host 'a' \\(\\$DOOD_HOST\\)"), (None, "on no host \\(\\$DOOD_HOST is unset\\)")],
)
def test_a_task_delivered_to_a_worker_on_another_host_fails_before_creating_anything(
    tmp_path, monkeypatch, dood_host, where
):
    from dood.operators.container import DoodContainerOperator

    path = _config_file(tmp_path)
    op = DoodContainerOperator(task_id="train", image="img", host="b", config_path=path)
    if dood_host:
        monkeypatch.setenv(HOST_ENV_VAR, dood_host)
    else:
        monkeypatch.delenv(HOST_ENV_VAR, raising=False)
    # no Docker is reached: the check comes before the hook (an empty context would fail any later step)
    with pytest.raises(DoodConfigError, match=f"train: placed on host b .* is {where}; nothing was created"):
        op.execute({})


def test_the_trigger_of_a_host_s_task_is_given_the_endpoint_every_host_reaches():
    from dood.triggers.container import DoodContainerTrigger

    trigger = DoodContainerTrigger.from_config(config().on_host("b"), "c" * 64)
    _, kwargs = trigger.serialize()
    assert kwargs["target"]["url"] == "tcp://gpu-b.example.com:2376"  # not the host-local unix socket
    assert kwargs["target"]["tls_client_cert"] == "/certs/cert.pem"


def test_a_resume_on_another_host_of_the_group_reaches_the_container_s_host(tmp_path, monkeypatch):
    """hosts: [b, c] share a queue: a deferred step launched on b may resume on c's worker; it must then talk
    to b's proxy over b's network endpoint (its handle says b), not to its own."""
    from dood.hosts import remote_view

    view = remote_view(config().on_host("c"), "b")
    assert view.host == "b" and view.docker.url == "tcp://gpu-b.example.com:2376"
    assert [e.host_path for e in view.mount_map] == ["/mnt/nfs/dood"]


def test_the_janitor_dag_sweeps_every_host_on_its_own_queue(tmp_path, monkeypatch):
    from pathlib import Path

    import yaml
    from airflow.dag_processing.dagbag import DagBag

    path = tmp_path / "dood.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts(), "mount_map": SHARED}))
    monkeypatch.setenv("DOOD_CONFIG", str(path))
    janitor = Path(__file__).resolve().parents[3] / "dags" / "dood_janitor.py"
    bag = DagBag(dag_folder=str(janitor))
    assert bag.import_errors == {}
    queues = {task.task_id: task.queue for task in bag.dags["dood_janitor"].tasks}
    assert queues == {
        "sweep_orphans": "default",
        "sweep_orphans_a": "dood-a",
        "sweep_orphans_b": "dood-b",
        "sweep_orphans_c": "box-c",
    }


def test_queues_without_a_live_worker_are_named_with_their_hosts():
    from dood.config.placement import queues_without_worker

    cfg = config(pipelines={"p": pipeline(train={"host_labels": {"gpu": "a100"}})})
    active = {"celery@a": ["default", "dood-a"], "celery@b": ["dood-b", "dood-b+c"]}
    assert queues_without_worker(cfg.hosts, cfg.pipelines, active) == {"box-c": ["c"]}
    assert queues_without_worker(cfg.hosts, cfg.pipelines, {}) == {
        "dood-a": ["a"],
        "dood-b": ["b"],
        "dood-b+c": ["b", "c"],
        "box-c": ["c"],
    }
