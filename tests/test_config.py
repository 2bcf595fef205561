"""Typed training configs: YAML files, inheritance, dotted overrides, type checks, shipped configs."""

from __future__ import annotations

import pytest
import yaml

from dualtrack.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    shipped_configs,
)
from dualtrack.training.stages import resolve_phases


def test_shipped_configs_load_and_round_trip():
    names = shipped_configs()
    for required in ("local", "global", "fusion", "coupled", "tiny_local", "tiny_global", "tiny_fusion"):
        assert required in names
    for name in names:
        cfg = load_config(name)
        again = config_from_dict(yaml.safe_load(dump_config(cfg)))
        assert again == cfg, name


def test_paper_stage_settings():
    local = load_config("local")
    assert local.sampling.mode == "clip" and local.sampling.clip_length == 16
    phases = resolve_phases(local)
    assert [p.name for p in phases] == ["cnn", "pooling", "temporal"]
    assert phases[0].epochs == 4000 and phases[1].epochs == 500 and phases[2].epochs == 500
    assert phases[1].freeze == ("local_cnn",) and phases[0].freeze == ()
    # the temporal transformer trains on whole sweeps, the length it attends over at inference
    assert phases[2].sampling.mode == "sweep" and phases[2].freeze == ("local_cnn", "local_pool")
    glob = load_config("global")
    assert glob.sampling.mode == "subset" and glob.model.name == "global_only"
    fusion = load_config("fusion")
    assert fusion.sampling.mode == "sweep" and fusion.stage.local_from and fusion.stage.global_from


def test_overrides_convert_types_and_reach_lists_and_model_kwargs():
    cfg = load_config(
        "tiny_local",
        [
            "optim.lr=3e-4",  # YAML 1.1 would read this as a string
            "optim.epochs=7",
            "data.local_crop=[16, 24]",
            "data.splits=001",  # str fields keep the raw text
            "stage.phases.1.lr=2e-3",
            "model.dropout=0.25",
            "runtime.stop_after_steps=null",
            "sampling.strides=[1, 2]",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.epochs == 7
    assert cfg.data.local_crop == [16, 24]
    assert cfg.data.splits == "001"
    assert cfg.stage.phases[1].lr == pytest.approx(2e-3)
    assert cfg.model.kwargs == {"dropout": 0.25} and cfg.model.name == "local_only_tiny"
    assert cfg.runtime.stop_after_steps is None
    assert cfg.sampling.strides == [1, 2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("optim.epochs=1.5", "expected an integer"),
        ("bogus.x=1", "valid keys: data, model, sampling, optim, stage, runtime"),
        ("sampling.mode=frames", "not one of"),
        ("stage.phases.9.lr=1", "list index"),
        ("runtime.amp=3", "true/false"),
        ("data=3", "is a section"),
        ("optim.lr", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")) as err:
        load_config("tiny_local", [override])
    # the error quotes the override as typed and says it came from the command line, not the file
    text = str(err.value)
    assert f"command-line override {override!r}" in text and "tiny_local.yaml" not in text


def test_a_bad_value_in_the_file_still_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny_local\nsampling:\n  batch_size: 1.5\n")
    with pytest.raises(ConfigError, match="expected an integer") as err:
        load_config(path, ["optim.lr=1e-3"])
    assert str(path) in str(err.value) and "command-line" not in str(err.value)


def test_unknown_key_in_yaml_lists_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny_local\nsampling:\n  clip_lenght: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "sampling.clip_lenght" in text and "clip_length" in text and str(path) in text


def test_extends_merges_and_detects_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\noptim:\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("extends: tiny_global\noptim:\n  epochs: 9\n  lr: 0.1\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert cfg.optim.lr == 0.5 and cfg.optim.epochs == 9 and cfg.model.name == "global_only_tiny"
    (tmp_path / "c.yaml").write_text("extends: d.yaml\n")
    (tmp_path / "d.yaml").write_text("extends: c.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "c.yaml")


def test_missing_config_lists_shipped_ones():
    with pytest.raises(ConfigError, match="tiny_local"):
        load_config("no_such_config")


def test_defaults_and_flattened_model_section():
    cfg = config_from_dict({"model": {"name": "two_frame_cnn", "backbone": "resnet18"}})
    assert cfg.model.kwargs == {"backbone": "resnet18"}
    assert config_to_dict(cfg)["model"] == {"name": "two_frame_cnn", "backbone": "resnet18"}
    assert config_from_dict({}) == TrainConfig()


def test_pipeline_files_are_checked(tmp_path):
    from dualtrack.training.pipeline import load_pipeline

    assert [m.name for m in load_pipeline("pipeline")] == ["dualtrack"]
    assert [s.name for s in load_pipeline("pipeline")[0].stages] == ["local", "global", "fusion"]
    with pytest.raises(ConfigError, match="'nope' is neither a file nor a shipped pipeline; shipped: "):
        load_pipeline("nope")
    extra = tmp_path / "extra.yaml"
    extra.write_text("models: []\nruns: x\n")
    with pytest.raises(ConfigError, match="extra.yaml: a pipeline file holds exactly one key, 'models'"):
        load_pipeline(extra)
    typo = tmp_path / "typo.yaml"
    typo.write_text("models:\n  - {name: m, stages: [{name: s, confg: local}]}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: .*confg"):
        load_pipeline(typo)
