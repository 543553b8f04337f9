"""The pipeline config's asset shapes: `inputs`, `model_asset` and a `schedule` of assets (alone, as an
expression, or with a cron: Airflow's AssetOrTimeSchedule); a bad one fails its pipeline alone, at parse time,
naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from dood.config.model import parse_config
from dood.config.pipelines import AssetSchedule, asset_condition_names
from dood.exceptions import DoodConfigError

STEPS = ("prepare", "train", "evaluate", "promote")
INPUTS = [{"uri": "file:///srv/data/eu", "name": "data_eu"}, {"uri": "s3://ml/us", "name": "data_us"}]


def pipeline(steps=STEPS, **fields):
    return {
        "data_root": "/d",
        "model_root": "/m",
        "artifact_root": "/a",
        "steps": {step: {"image": "x", "command": ["c"]} for step in steps},
        **fields,
    }


def parsed(**fields):
    return parse_config({"pipelines": {"p": pipeline(**fields)}}, "t.yaml").pipelines["p"]


def problems(**fields) -> str:
    with pytest.raises(DoodConfigError) as info:
        parsed(**fields)
    return str(info.value)


@pytest.mark.parametrize(
    ("schedule", "names"),
    [
        ({"assets": "data_eu"}, ["data_eu"]),
        ({"assets": "s3://ml/us"}, ["s3://ml/us"]),  # an input's URI names it too
        ({"assets": ["data_eu", "data_us"]}, ["data_eu", "data_us"]),
        ({"assets": {"any": ["data_eu", {"all": ["data_us", "data_eu"]}]}}, ["data_eu", "data_us", "data_eu"]),
        ({"assets": "data_eu", "cron": "@weekly"}, ["data_eu"]),
        ({"assets": "data_eu", "cron": "0 3 * * 1"}, ["data_eu"]),
    ],
)
def test_asset_schedules_in_every_shape(schedule, names):
    p = parsed(inputs=INPUTS, schedule=schedule)
    assert isinstance(p.schedule, AssetSchedule)
    assert asset_condition_names(p.schedule.assets) == names
    assert p.schedule.cron == schedule.get("cron")


def test_a_time_schedule_stays_a_string_and_a_bad_cron_fails_its_pipeline_alone():
    assert parsed(schedule="0 3 * * 1").schedule == "0 3 * * 1"
    assert parsed(schedule=None).schedule is None
    assert "schedule '61 * * * *' is not a cron expression" in problems(schedule="61 * * * *")
    assert "'@weird' is not one of Airflow's presets" in problems(schedule="@weird")
    data = {"pipelines": {"bad": pipeline(schedule="@weird"), "good": pipeline()}}
    config = parse_config(data, "t.yaml", set_aside_invalid_pipelines=True)
    assert list(config.pipelines) == ["good"] and "pipelines.bad.schedule" in config.pipeline_errors["bad"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"schedule": {"assets": "nope"}},
            "pipelines.p.schedule: Value error, assets names 'nope', which is not one "
            "of this pipeline's inputs (names: ['data_eu', 'data_us']); declare it under inputs",
        ),
        (
            {"schedule": {"assets": {"anyy": ["data_eu"]}}},
            "schedule.assets {'anyy': ['data_eu']}: a mapping holds exactly one key, all or any",
        ),
        ({"schedule": {"assets": {"any": []}}}, "schedule.assets.any must be a non-empty list"),
        ({"schedule": {"assets": []}}, "schedule.assets is an empty list"),
        ({"schedule": {"assets": [3]}}, "schedule.assets[0]: 3 is not an asset name"),
        ({"schedule": {"assets": "data_eu", "cron": "@once"}}, "schedule.cron '@once' is not one of Airflow's presets"),
        ({"schedule": {"assets": "data_eu", "cron": "every day"}}, "schedule.cron 'every day' is not a cron"),
        (
            {"schedule": {"asset": "data_eu"}},
            "schedule.assets: Field required; schedule.asset: Extra inputs are not "
            "permitted (give a cron expression or preset",
        ),
        ({"schedule": ["data_eu"]}, "['data_eu'] is not a schedule: give a cron expression"),
        (
            {"inputs": [{"uri": "airflow://x"}]},
            "pipelines.p.inputs.0.uri: Value error, uri 'airflow://x': the scheme 'airflow' is reserved",
        ),
        ({"inputs": [{"uri": "s3://user:pw@host/k"}]}, "holds a password"),
        ({"inputs": [{"uri": " "}]}, "uri must not be empty"),
        ({"inputs": [{"uri": "file:///x", "name": "self"}]}, "name 'self' is reserved by Airflow"),
        (
            {"inputs": [*INPUTS, {"uri": "file:///other", "name": "data_eu"}]},
            "pipelines.p.inputs: Value error, [2]: 'data_eu' names two different inputs",
        ),
        ({"model_asset": {"uri": "s3://ml/us"}}, "pipelines.p.model_asset: Value error, 's3://ml/us' is also an input"),
        (
            {"model_asset": {"uri": "file:///m/champion"}, "steps": STEPS[:3]},
            "pipelines.p.steps: Value error, model_asset needs a promote step",
        ),
    ],
)
def test_bad_asset_config_names_the_field_and_the_fix(fields, expected):
    assert expected in problems(**{"inputs": INPUTS, **fields})


def test_assets_are_optional_and_named_by_their_uri_by_default():
    p = parsed(inputs=[{"uri": "file:///srv/data"}], model_asset={"uri": "file:///srv/models/champion"})
    assert p.inputs[0].key == "file:///srv/data" and p.model_asset.key == "file:///srv/models/champion"
    assert parsed().inputs == () and parsed().model_asset is None


def test_the_example_config_declares_the_asset_chain():
    import yaml

    data = yaml.safe_load((Path(__file__).resolve().parents[3] / "config" / "dood.yaml").read_text())
    p = parse_config({"pipelines": data["pipelines"]}, "config/dood.yaml").pipelines["breast_cancer"]
    assert p.schedule == AssetSchedule(assets="breast_cancer_data", cron="@weekly")
    assert [a.key for a in p.inputs] == ["breast_cancer_data"] and p.model_asset.key == "breast_cancer_model"
