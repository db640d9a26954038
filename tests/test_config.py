import dataclasses

import pytest

from neural_mapping import config as C


def test_every_field_has_a_doc():
    names = [n for n, _, _ in C.iter_params()]
    assert len(names) == len(set(names)) > 40
    for n, f, _ in C.iter_params():
        assert f.metadata["doc"], n


def test_validation_names_the_field():
    with pytest.raises(C.ConfigError, match=r"field.hidden: 3 is below the minimum 8"):
        C.apply_overrides(C.MapperConfig(), {"field.hidden": 3})
    with pytest.raises(C.ConfigError, match=r"encoding.kind: 'x' is not one of"):
        C.apply_overrides(C.MapperConfig(), {"encoding.kind": "x"})
    with pytest.raises(C.ConfigError, match=r"nope.x: unknown"):
        C.apply_overrides(C.MapperConfig(), {"nope.x": 1})
    with pytest.raises(C.ConfigError, match=r"train.lr: expected float"):
        C.apply_overrides(C.MapperConfig(), {"train.lr": "fast"})
    with pytest.raises(C.ConfigError, match=r"occupancy.z_max"):
        C.apply_overrides(C.MapperConfig(), {"occupancy.z_min": 2.0, "occupancy.z_max": 1.0})


def test_int_promotes_to_float():
    cfg = C.apply_overrides(C.MapperConfig(), {"train.lr": 1})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_yaml_round_trip(tmp_path):
    cfg = C.apply_overrides(C.preset("cpu"), {"field.kind": "nerf", "mesh.voxel_m": 0.03})
    p = tmp_path / "c.yaml"
    C.save_yaml(cfg, p)
    assert C.load_yaml(p) == cfg


def test_ros_params_file_is_accepted(tmp_path):
    p = tmp_path / "ros.yaml"
    p.write_text("neural_mapper:\n  ros__parameters:\n    map_frame: odom\n    field:\n      hidden: 32\n")
    assert C.load_yaml(p).field.hidden == 32


def test_bad_yaml_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("field: [unclosed\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load_yaml(p)
    with pytest.raises(C.ConfigError, match="not found"):
        C.load_yaml(tmp_path / "missing.yaml")


def test_presets_differ_and_are_valid():
    cpu, gpu = C.preset("cpu"), C.preset("gpu")
    assert cpu.device == "cpu" and gpu.device == "cuda"
    assert dataclasses.asdict(cpu) != dataclasses.asdict(gpu)
    with pytest.raises(C.ConfigError):
        C.preset("tpu")


def test_readme_reference_is_generated_from_the_dataclasses():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert C.reference_markdown() in readme, "run: python -m neural_mapping.config --update-readme"
