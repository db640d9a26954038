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


def test_an_unknown_section_is_refused_like_an_unknown_key(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("feild:\n  hidden: 32\n")
    with pytest.raises(C.ConfigError, match=r"feild: unknown configuration section"):
        C.load_yaml(p)
    p.write_text("field:\n  hiden: 32\n")
    with pytest.raises(C.ConfigError, match=r"field.hiden: unknown configuration key"):
        C.load_yaml(p)
    p.write_text("devise: cpu\n")
    with pytest.raises(C.ConfigError, match=r"devise: unknown configuration key"):
        C.load_yaml(p)
    # in a ROS params file the node's own scalar parameters sit beside the groups; sections must be known
    p.write_text("neural_mapper:\n  ros__parameters:\n    map_frame: odom\n    feild:\n      hidden: 32\n")
    with pytest.raises(C.ConfigError, match=r"feild: unknown configuration section"):
        C.load_yaml(p)


def test_cli_refuses_a_config_with_an_unknown_section_in_one_line_before_reading_input(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "typo.yaml"
    p.write_text("trian:\n  lr: 0.1\n")
    r = subprocess.run([sys.executable, "-m", "neural_mapping.cli", "map", str(tmp_path / "no_input"), "--out",
                        str(tmp_path / "out"), "--config", str(p), "--quiet"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "trian: unknown configuration section" in r.stderr
