"""ROS parameters derived from the config dataclasses: declared on a real rclpy node."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from neural_mapping.config import PRESETS, MapperConfig, ConfigError, iter_params, load_yaml, preset, to_flat
from neural_mapping.ros import params as P

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def rcl(ros_env):
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []

    def make(overrides=None):
        from rclpy.node import Node
        from rclpy.parameter import Parameter

        ps = [Parameter(k, value=v) for k, v in (overrides or {}).items()]
        n = Node("neural_mapper", context=ctx, parameter_overrides=ps)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.destroy_node()
    ctx.try_shutdown()


def test_every_config_field_is_a_declared_parameter_with_descriptor(rcl):
    from rcl_interfaces.msg import ParameterType

    node = rcl()
    ncfg, mcfg = P.declare_all(node)
    declared = set(node._parameters)
    mapper_names = {name for name, _, _ in iter_params(MapperConfig)}
    node_names = {f.name for f in dataclasses.fields(P.NodeConfig)}
    assert mapper_names <= declared
    assert node_names <= declared
    assert "device" in mapper_names and "field.kind" in declared and "encoding.kind" in declared
    for name, f, _ in iter_params(MapperConfig):
        d = node.describe_parameter(name)
        assert d.description.startswith(f.metadata["doc"])
        assert d.read_only == (not f.metadata["runtime"])
        if f.metadata["lo"] is not None and isinstance(f.default, float):
            assert d.type == ParameterType.PARAMETER_DOUBLE
            assert d.floating_point_range[0].from_value == f.metadata["lo"]
        if f.metadata["hi"] is not None and isinstance(f.default, int) and not isinstance(f.default, bool):
            assert d.integer_range[0].to_value == f.metadata["hi"]
        if f.metadata["choices"]:
            assert all(str(c) in d.additional_constraints for c in f.metadata["choices"])
    # the resolved config is the cpu preset (the default preset)
    assert to_flat(mcfg) == to_flat(preset("cpu"))
    assert node.describe_parameter("mesh_rate_hz").read_only is False
    assert node.describe_parameter("occupancy.z_min").read_only is False
    assert node.describe_parameter("train.lr").read_only is True


def test_preset_then_explicit_overrides_win(rcl):
    node = rcl({"preset": "gpu", "train.lr": 0.05, "device": "cpu", "map_frame": "world"})
    ncfg, mcfg = P.declare_all(node)
    assert mcfg.train.rays_per_step == PRESETS["gpu"]["train.rays_per_step"] != MapperConfig().train.rays_per_step  # the gpu preset
    assert mcfg.train.lr == 0.05 and mcfg.device == "cpu"
    assert ncfg.map_frame == "world" and ncfg.preset == "gpu"


def test_preset_none_gives_dataclass_defaults(rcl):
    _, mcfg = P.declare_all(rcl({"preset": "none"}))
    assert to_flat(mcfg) == to_flat(MapperConfig())


def test_out_of_range_or_bad_choice_is_refused(rcl):
    from rclpy.exceptions import InvalidParameterValueException

    with pytest.raises(InvalidParameterValueException):
        P.declare_all(rcl({"train.rays_per_step": 1}))  # below lo=16: the descriptor range refuses it
    with pytest.raises(ConfigError, match="field.kind"):
        P.declare_all(rcl({"field.kind": "voxels"}))
    with pytest.raises(ConfigError, match="occupancy.z_max"):
        P.declare_all(rcl({"occupancy.z_min": 2.0, "occupancy.z_max": 1.0}))
    with pytest.raises(ConfigError, match="T_body_camera"):
        P.declare_all(rcl({"T_body_camera": [1.0, 0.0, 0.0]}))


def test_runtime_range_is_enforced_by_the_descriptor(rcl):
    from rclpy.parameter import Parameter

    node = rcl()
    P.declare_all(node)
    ok = node.set_parameters([Parameter("mesh_rate_hz", value=2.0)])[0]
    bad = node.set_parameters([Parameter("mesh_rate_hz", value=500.0)])[0]
    ro = node.set_parameters([Parameter("train.lr", value=0.1)])[0]
    assert ok.successful and not bad.successful and not ro.successful
    assert node.get_parameter("mesh_rate_hz").value == 2.0


def test_names_are_unique_and_cover_both_sources():
    ps = P.ros_params()
    names = [p.name for p in ps]
    assert len(names) == len(set(names))
    assert set(names) == set(P.node_param_names()) | {n for n, _, _ in iter_params(MapperConfig)}


def test_config_yaml_is_in_sync_with_the_dataclasses():
    text = (REPO / "config" / "mapper.yaml").read_text()
    assert text == P.generate_yaml(), "run: python -m neural_mapping.ros.params > config/mapper.yaml"
    ros = yaml.safe_load(text)["/**"]["ros__parameters"]
    names = set()
    for k, v in ros.items():  # groups are nested mappings: train: {lr: ...} is train.lr
        names |= {f"{k}.{n}" for n in v} if isinstance(v, dict) else {k}
    assert names == {p.name for p in P.ros_params()}
    assert P.NodeConfig(**{k: ros[k] for k in P.node_param_names()}) == P.NodeConfig()
    # the core's own YAML loader reads the mapper parameters of the same file
    assert to_flat(load_yaml(REPO / "config" / "mapper.yaml")) == to_flat(preset("cpu"))
    assert P.main(["--check", str(REPO / "config" / "mapper.yaml")]) == 0


def test_check_detects_a_stale_yaml(tmp_path):
    stale = tmp_path / "mapper.yaml"
    stale.write_text(P.generate_yaml().replace("mesh_rate_hz: 0.1", "mesh_rate_hz: 0.3"))
    assert P.main(["--check", str(stale)]) == 1


def test_coerce_value_makes_ros_arrays_lists_of_the_fields_type():
    import array

    import numpy as np

    assert P.coerce_value(array.array("d", [1.0, 2.5]), [0.0]) == [1.0, 2.5]
    got = P.coerce_value(np.array([3, 4]), [1, 2])
    assert got == [3, 4] and all(type(x) is int for x in got)
    assert P.coerce_value((1, 2), []) == [1.0, 2.0]  # an empty default: doubles, as declared
    assert P.coerce_value(0.5, 1.0) == 0.5 and P.coerce_value(None, [1.0]) is None
    ident = P.coerce_value(array.array("d", P.IDENTITY_16), P.NodeConfig().T_body_camera)
    assert P.NodeConfig(T_body_camera=ident).T_body_camera == P.IDENTITY_16
