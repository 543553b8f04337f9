"""The DAG factory and pipeline config, without Docker: structure, Params, errors that name the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dood.config.model import load_config, parse_config
from dood.dag_factory import build_dags
from dood.exceptions import DoodConfigError

REPO = Path(__file__).resolve().parents[2]
STEP = {"image": "img", "command": ["run"]}


def pipeline(**overrides):
    value = {
        "data_root": "/d",
        "model_root": "/m",
        "artifact_root": "/a",
        "steps": {"prepare": STEP, "train": STEP, "evaluate": STEP, "promote": STEP},
    }
    value.update(overrides)
    return value


def test_repository_dags_import_without_errors(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("DOOD_CONFIG", str(REPO / "config" / "dood.yaml"))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert "dood_breast_cancer" in bag.dag_ids


def test_one_dag_per_pipeline_chained_in_order():
    config = parse_config({"pipelines": {"churn": pipeline(schedule="0 3 * * 1", max_active_runs=3, pool="gpu")}})
    dag = build_dags(config)["dood_churn"]
    assert [t.task_id for t in dag.topological_sort()] == ["prepare", "train", "evaluate", "promote"]
    assert dag.max_active_runs == 3 and dag.catchup is False
    assert all(t.pool == "gpu" for t in dag.tasks)
    assert dag.get_task("promote").skip_on_exit_code == frozenset({99})


def test_promote_is_optional():
    steps = {"prepare": STEP, "train": STEP, "evaluate": STEP}
    dag = build_dags(parse_config({"pipelines": {"p": pipeline(steps=steps)}}))["dood_p"]
    assert [t.task_id for t in dag.topological_sort()] == ["prepare", "train", "evaluate"]


def test_trigger_form_params_are_typed_with_limits():
    hp = {
        "n_estimators": {"type": "integer", "default": 100, "minimum": 10, "maximum": 500},
        "max_depth": {"type": "integer", "default": 8, "description": "Maximum depth of each tree"},
    }
    dag = build_dags(parse_config({"pipelines": {"p": pipeline(hyperparameters=hp, max_gpus=2)}}))["dood_p"]
    schema = {name: param.schema for name, param in dag.params.items()}
    # A default makes it optional (no required-star; empty means the default); a human title, the range told.
    assert schema["n_estimators"] == {
        "type": ["integer", "null"],
        "title": "n estimators",
        "minimum": 10,
        "maximum": 500,
    }
    assert dag.params.get_param("n_estimators").description == "n_estimators, 10–500; default 100."
    # Fields with defaults are nullable too (no required-star in the form).
    assert all(
        "null" in schema[name]["type"]
        for name in ("image_tag", "gpus", "min_accuracy", "dataset_date", "force_promote")
    )
    assert schema["max_depth"]["title"] == "Maximum depth of each tree"
    assert schema["gpus"]["maximum"] == 2
    cpu_only = build_dags(parse_config({"pipelines": {"p": pipeline()}}))["dood_p"]
    assert "CPUs only" in cpu_only.params.get_param("gpus").description
    assert schema["force_promote"]["type"] == ["boolean", "null"]
    assert schema["dataset_date"]["format"] == "date"
    dag.params.validate()  # the defaults themselves are valid


def test_bad_param_value_is_rejected():
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    hp = {"n_estimators": {"type": "integer", "default": 100, "minimum": 10, "maximum": 500}}
    dag = build_dags(parse_config({"pipelines": {"p": pipeline(hyperparameters=hp)}}))["dood_p"]
    params = ParamsDict(dag.params)
    with pytest.raises(ParamValidationError, match="n_estimators.*greater than the maximum"):
        params["n_estimators"] = 5000


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"steps": {"prepare": STEP, "train": STEP}}, "pipelines.p.steps"),
        (
            {"steps": {"prepare": STEP, "train": {"image": "img:1.0", "command": ["x"]}, "evaluate": STEP}},
            "pipelines.p.steps.train.image",
        ),
        (
            {"steps": {"prepare": STEP, "train": {**STEP, "resources": {"memory": "huge"}}, "evaluate": STEP}},
            "pipelines.p.steps.train.resources.memory",
        ),
        ({"steps": {"prepare": STEP, "train": STEP, "evaluate": STEP, "deploy": STEP}}, "pipelines.p.steps.deploy"),
        ({"artifact_root": "relative/dir"}, "pipelines.p.artifact_root"),
        ({"hyperparameters": {"depth": {"default": 50, "maximum": 10}}}, "pipelines.p.hyperparameters.depth"),
        ({"max_active_runs": 0}, "pipelines.p.max_active_runs"),
        ({"retry_delay_seconds": -1}, "pipelines.p.retry_delay_seconds"),
        (
            {"steps": {"prepare": STEP, "train": {**STEP, "retries": -1}, "evaluate": STEP}},
            "pipelines.p.steps.train.retries",
        ),
        (
            {"steps": {"prepare": STEP, "train": {**STEP, "retry_delay_seconds": "soon"}, "evaluate": STEP}},
            "pipelines.p.steps.train.retry_delay_seconds",
        ),
    ],
)
def test_config_errors_name_pipeline_step_and_field(change, path):
    with pytest.raises(DoodConfigError) as err:
        parse_config({"pipelines": {"p": pipeline(**change)}})
    assert path in str(err.value)


def test_env_vars_are_expanded_in_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_ROOT", "/srv/ml")
    path = tmp_path / "dood.yaml"
    path.write_text(
        "pipelines:\n  p:\n    data_root: ${ML_ROOT}/data\n    model_root: /m\n    artifact_root: /a\n"
        "    steps: {prepare: {image: i, command: [x]}, train: {image: i, command: [x]},"
        " evaluate: {image: i, command: [x]}}\n"
    )
    assert load_config(path).pipelines["p"].data_root == "/srv/ml/data"


def test_every_step_is_bounded_across_all_runs_backfills_included():
    dag = build_dags(parse_config({"pipelines": {"p": pipeline(max_active_runs=2)}}))["dood_p"]
    assert {t.max_active_tis_per_dag for t in dag.tasks} == {2}
    tighter = build_dags(parse_config({"pipelines": {"p": pipeline(max_active_runs=3, max_active_trainings=1)}}))
    assert {t.max_active_tis_per_dag for t in tighter["dood_p"].tasks} == {1}


def test_retries_and_their_delay_default_short_and_each_step_may_set_its_own():
    """A retry adopts the earlier try's running container, so the default delay is seconds, not Airflow's 300."""
    dag = build_dags(parse_config({"pipelines": {"p": pipeline()}}))["dood_p"]
    assert {(t.retries, t.retry_delay) for t in dag.tasks} == {(1, timedelta(seconds=15))}
    steps = {"prepare": STEP, "train": {**STEP, "retries": 3, "retry_delay_seconds": 30}, "evaluate": STEP}
    config = parse_config({"pipelines": {"p": pipeline(retries=0, retry_delay_seconds=5, steps=steps)}})
    tasks = {t.task_id: (t.retries, t.retry_delay) for t in build_dags(config)["dood_p"].tasks}
    assert tasks == {
        "prepare": (0, timedelta(seconds=5)),
        "train": (3, timedelta(seconds=30)),
        "evaluate": (0, timedelta(seconds=5)),
    }


def test_promotion_defaults_are_safe_for_backfills():
    config = parse_config({"pipelines": {"p": pipeline()}})
    promotion = config.pipelines["p"].promotion
    assert promotion.from_backfill is False and promotion.require_newer_data is True


# --- one bad pipeline fails alone ---


def write_config(tmp_path, data) -> str:
    import yaml

    path = tmp_path / "dood.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_bad_pipeline_fails_alone_and_the_good_one_keeps_its_dag(tmp_path):
    from dood.dag_factory import raise_for_invalid_pipelines
    from dood.exceptions import InvalidPipelines

    only_train = pipeline(steps={"train": STEP})
    path = write_config(tmp_path, {"pipelines": {"good": pipeline(), "only_train": only_train}})
    config = load_config(path, view=False)  # what every Airflow process reads: not fatal
    assert list(config.pipelines) == ["good"]
    assert "pipelines.only_train.steps" in config.pipeline_errors["only_train"]
    assert list(build_dags(config_path=path)) == ["dood_good"]
    with pytest.raises(InvalidPipelines) as caught:
        raise_for_invalid_pipelines(config_path=path)
    message = str(caught.value)
    assert caught.value.errors.keys() == {"only_train"} and path in message
    assert "pipeline 'only_train' (DAG dood_only_train)" in message
    assert "pipelines.only_train.steps" in message and "missing steps ['prepare', 'evaluate']" in message
    assert "every other pipeline keeps its DAG" in message
    raise_for_invalid_pipelines(parse_config({"pipelines": {"good": pipeline()}}))  # all valid: nothing raised


def test_every_kind_of_pipeline_error_is_set_aside_naming_pipeline_and_field(tmp_path):
    pipelines = {
        "good": pipeline(),
        "bad-name": pipeline(),
        "placed": pipeline(steps={"prepare": STEP, "train": {**STEP, "host": "nowhere"}, "evaluate": STEP}),
        "memory": pipeline(
            steps={"prepare": STEP, "train": {**STEP, "resources": {"memory": "huge"}}, "evaluate": STEP}
        ),
        "not_a_mapping": "oops",
    }
    config = load_config(write_config(tmp_path, {"pipelines": pipelines}), view=False)
    assert list(config.pipelines) == ["good"]
    errors = config.pipeline_errors
    assert "pipelines.bad-name: the name may hold only letters" in errors["bad-name"]
    assert "pipelines.placed: steps.train: host needs hosts under `hosts:`" in errors["placed"]
    assert "got" not in errors["placed"]  # not the whole config again
    assert "pipelines.memory.steps.train.resources.memory" in errors["memory"]
    assert "pipelines.not_a_mapping" in errors["not_a_mapping"]
    assert config.on_host(None).pipeline_errors == errors  # a host's view keeps them


def test_a_config_broken_outside_pipelines_fails_everything_and_says_so(tmp_path):
    path = write_config(tmp_path, {"runs_root": "relative", "pipelines": {"good": pipeline()}})
    with pytest.raises(DoodConfigError) as caught:
        load_config(path, view=False)
    assert "runs_root" in str(caught.value)
    assert "outside `pipelines:`, so every dood DAG (pipelines and janitor)" in str(caught.value)


def test_strict_validation_still_fails_on_a_bad_pipeline():
    with pytest.raises(DoodConfigError, match=r"pipelines\.p\.steps"):
        parse_config({"pipelines": {"p": pipeline(steps={"train": STEP})}})
