"""ROS parameters of the node, derived from the config dataclasses (never a second list).

Two sources, one mechanism:
  * :class:`NodeConfig` (this module): node-level settings, top-level ROS names
    (``map_frame``, ``pose_source``, publish rates, ...), declared with
    :func:`neural_mapping.config.param` so docs and ranges live in one place;
  * :class:`neural_mapping.config.MapperConfig`: every field, with dotted names for
    the groups (``field.kind``, ``train.lr``, ...) and ``device`` at the top level.

:func:`ros_params` lists both as :class:`RosParam` records; :func:`descriptor` turns a
record into a ``ParameterDescriptor`` (description, ranges, read_only unless the field
is ``runtime``); :func:`declare_all` declares them on a node and returns the resolved
configs; :func:`generate_yaml` writes ``config/mapper.yaml``.

The preset: ``preset`` is declared first; the MapperConfig parameters are then
declared with the preset's values as defaults, so explicit overrides (``-p`` or a
params file) still win over the preset.

Regenerate the YAML with ``python -m neural_mapping.ros.params > config/mapper.yaml``
(``--check FILE`` exits 1 when FILE is out of date).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from neural_mapping.config import (
    PRESETS,
    ConfigError,
    ConfigGroup,
    MapperConfig,
    apply_overrides,
    iter_params,
    param,
    preset as preset_config,
)

IDENTITY_16 = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]

#: rate parameters (Hz) of the publish timers, by product
RATE_PARAMS = ("mesh_rate_hz", "occupancy_rate_hz", "voxels_rate_hz", "esdf_rate_hz", "render_rate_hz", "status_rate_hz")


@dataclass
class NodeConfig(ConfigGroup):
    """Node-level settings (top-level ROS parameter names)."""

    preset: str = param("cpu", "Base preset of the mapper config; explicit parameters override it",
                        choices=("none",) + tuple(PRESETS))
    map_frame: str = param("map", "Frame of the products and of the camera pose (T_map_camera)")
    map_dir: str = param("~/.ros/neural_mapping/maps", "Directory of save_map/load_map files (names are relative to it)")
    pose_source: str = param("pose", "Camera pose input: pose (PoseStamped), odom (Odometry) or tf (needs tf2_ros)",
                             choices=("pose", "odom", "tf"))
    camera_frame: str = param("", "tf: frame of the camera (empty: the depth image's header.frame_id)")
    T_body_camera: list = param(list(IDENTITY_16),
                                "Static extrinsic camera->body, 16 row-major values, applied when the pose is of the body "
                                "(T_map_camera = T_map_body * T_body_camera)")
    sync_slop_s: float = param(0.02, "Approximate time sync: max stamp difference of color, depth and camera_info (s)",
                               lo=0.0, hi=1.0)
    pose_max_gap_s: float = param(0.5, "Max gap between the two pose messages bracketing an image stamp (s)",
                                  lo=0.0, hi=60.0)
    queue_size: int = param(16, "Bounded frame queue between callbacks and trainer (oldest dropped)", lo=1, hi=1000)
    frames_per_step: int = param(16, "Trainer: at most this many queued frames integrated between two training steps "
                                     "(16, as `map --realtime`: at 30 Hz every frame reaches the map while training "
                                     "goes on between frames)", lo=1, hi=1000)
    input_max_width: int = param(0, "Subsample input images by the smallest integer stride that makes them at most "
                                    "this wide, before queuing (intrinsics scaled, colour sampled at the kept depth "
                                    "pixels); 0 = auto (320 px when the mapper runs on CPU, full resolution on CUDA); "
                                    "-1 = always full resolution", lo=-1, hi=16384)
    paused: bool = param(False, "Pause training (frames are still received and counted)", runtime=True)
    # Product rates: what the cpu preset meets on 2 cores within product_duty_max 0.3 (sum of rate x seconds
    # per computation <= 0.25; measured with benchmarks/bench_soak.py, 320x240 at 60 Hz, 6 jobs sharing the
    # cores: mesh 0.65 s, occupancy 1.4 s, voxels 1.8 s, esdf 0.44 s, render 2.0 s). Raise them on a faster
    # machine or CUDA; ~/status reports each product's achieved rate (<name>_hz_achieved).
    mesh_rate_hz: float = param(0.1, "Mesh publish rate (Hz, 0 = off); published only when the map changed",
                                lo=0.0, hi=50.0, runtime=True)
    mesh_budget_s: float = param(0.5, "Time budget of one mesh update (s): tiles newly observed or whose field moved "
                                      "most are recomputed first, the others keep their mesh until later updates "
                                      "(published while any are pending); 0 = recompute every changed tile",
                                 lo=0.0, hi=60.0, runtime=True)
    occupancy_rate_hz: float = param(0.05, "2D occupancy publish rate (Hz, 0 = off)", lo=0.0, hi=50.0, runtime=True)
    voxels_rate_hz: float = param(0.02, "Occupied voxels publish rate (Hz, 0 = off)", lo=0.0, hi=50.0, runtime=True)
    esdf_rate_hz: float = param(0.05, "ESDF slice publish rate (Hz, 0 = off)", lo=0.0, hi=50.0, runtime=True)
    render_rate_hz: float = param(0.02, "Rendered view publish rate (Hz, 0 = off)", lo=0.0, hi=50.0, runtime=True)
    status_rate_hz: float = param(1.0, "~/status DiagnosticArray rate (Hz, 0 = off)", lo=0.0, hi=50.0, runtime=True)
    products_min_steps: int = param(20, "Products are computed only after this many training steps (an untrained "
                                         "field has meaningless surfaces everywhere)", lo=0, hi=1_000_000)
    product_duty_max: float = param(0.3, "Max fraction of wall time spent computing products; timers skip ticks "
                                         "beyond it so training keeps going", lo=0.01, hi=1.0, runtime=True)
    render_width: int = param(160, "Width of the published rendered view (px)", lo=8, hi=4096)
    render_height: int = param(120, "Height of the published rendered view (px)", lo=8, hi=4096)
    render_max_pixels: int = param(1920 * 1080, "Largest render_view request accepted (width x height pixels); "
                                                "larger ones are refused with a message naming this limit",
                                   lo=1, hi=4096 * 4096)
    render_timeout_s: float = param(60.0, "Time budget of one render_view request (s): it renders in bands of rows "
                                          "with queries served between them and fails past this budget", lo=0.1,
                                    hi=3600.0, runtime=True)
    save_on_shutdown: bool = param(False, "On SIGINT/SIGTERM, save the map (if any frame was integrated) as "
                                          "shutdown_map_name in map_dir before exiting", runtime=True)
    shutdown_map_name: str = param("shutdown.map", "Map file name (inside map_dir) of save_on_shutdown")
    max_query_points: int = param(2_000_000, "Largest query_field request accepted (points)", lo=1, hi=100_000_000)
    submaps_freeze_idle_s: float = param(10.0, "With submaps.enabled: freeze and publish the active submaps on "
                                               "~/submaps once no frame arrived for this long (s), so a robot that "
                                               "finished its run publishes everything (docs/fleet.md); 0 = only at "
                                               "shutdown", lo=0.0, hi=86400.0, runtime=True)
    warn_throttle_s: float = param(5.0, "Minimum interval between repeated warnings of one kind (s)", lo=0.0, hi=3600.0)

    def check(self) -> None:
        if len(self.T_body_camera) != 16:
            raise ConfigError(f"T_body_camera: expected 16 row-major values, got {len(self.T_body_camera)}")


@dataclass
class RosParam:
    """One ROS parameter: name, default, and the metadata of its config field."""

    name: str
    default: Any
    doc: str
    lo: float | None
    hi: float | None
    choices: tuple | None
    runtime: bool
    source: str  # 'node' or 'mapper'


def _record(name: str, f: dataclasses.Field, default: Any, source: str) -> RosParam:
    md = f.metadata
    return RosParam(name, default, md["doc"], md["lo"], md["hi"], md["choices"], md["runtime"], source)


def node_param_names() -> list[str]:
    return [f.name for f in dataclasses.fields(NodeConfig) if "doc" in f.metadata]


def ros_params(preset_name: str = NodeConfig.preset) -> list[RosParam]:
    """Every ROS parameter: node settings first, then MapperConfig (defaults from ``preset_name``)."""
    base = MapperConfig() if preset_name == "none" else preset_config(preset_name)
    out = [_record(f.name, f, getattr(NodeConfig(), f.name), "node")
           for f in dataclasses.fields(NodeConfig) if "doc" in f.metadata]
    for name, f, _ in iter_params(MapperConfig):
        obj = base
        for part in name.split("."):
            obj = getattr(obj, part)
        out.append(_record(name, f, obj, "mapper"))
    names = [p.name for p in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:  # a NodeConfig field shadowing a MapperConfig one would be a second source
        raise ConfigError(f"parameter names declared twice: {sorted(dup)}")
    return out


def descriptor(p: RosParam):
    """ParameterDescriptor for a parameter: description, ranges, read_only unless runtime."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

    d = ParameterDescriptor()
    d.name = p.name
    d.description = p.doc + (" (changeable at runtime)" if p.runtime else "")
    d.read_only = not p.runtime
    v = p.default
    if isinstance(v, bool):
        d.type = ParameterType.PARAMETER_BOOL
    elif isinstance(v, int):
        d.type = ParameterType.PARAMETER_INTEGER
        if p.lo is not None or p.hi is not None:
            d.integer_range = [IntegerRange(
                from_value=int(p.lo) if p.lo is not None else -(2**63),
                to_value=int(p.hi) if p.hi is not None else 2**63 - 1, step=0)]
    elif isinstance(v, float):
        d.type = ParameterType.PARAMETER_DOUBLE
        if p.lo is not None or p.hi is not None:
            d.floating_point_range = [FloatingPointRange(
                from_value=float(p.lo) if p.lo is not None else -sys.float_info.max,
                to_value=float(p.hi) if p.hi is not None else sys.float_info.max, step=0.0)]
    elif isinstance(v, str):
        d.type = ParameterType.PARAMETER_STRING
    elif isinstance(v, list):
        if all(isinstance(x, bool) for x in v) and v:
            d.type = ParameterType.PARAMETER_BOOL_ARRAY
        elif all(isinstance(x, int) and not isinstance(x, bool) for x in v) and v:
            d.type = ParameterType.PARAMETER_INTEGER_ARRAY
        elif all(isinstance(x, str) for x in v) and v:
            d.type = ParameterType.PARAMETER_STRING_ARRAY
        else:
            d.type = ParameterType.PARAMETER_DOUBLE_ARRAY
        if p.lo is not None or p.hi is not None:
            d.additional_constraints = f"every element in [{p.lo}, {p.hi}]"
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(str(c) for c in p.choices)
    return d


def _ros_value(p: RosParam):
    """The default as a value rclpy accepts (an empty list needs an explicit type)."""
    from rclpy.parameter import Parameter

    if isinstance(p.default, list) and not p.default:
        return Parameter.Type.DOUBLE_ARRAY
    return p.default


def coerce_value(value: Any, current: Any) -> Any:
    """A ROS parameter value in the Python type of the config field's ``current`` value: ROS
    arrays come back as array.array / numpy, the config holds lists (of ``current``'s element type)."""
    if isinstance(current, list) and not isinstance(value, list) and value is not None:
        return [type(current[0])(x) if current else float(x) for x in value]
    return value


def build_configs(values: dict[str, Any]) -> tuple[NodeConfig, MapperConfig]:
    """NodeConfig and MapperConfig from a flat name->value dict (all parameters); validated."""
    node_names = set(node_param_names())
    node_kwargs = {k: v for k, v in values.items() if k in node_names}
    ncfg = NodeConfig(**node_kwargs)
    base = MapperConfig() if ncfg.preset == "none" else preset_config(ncfg.preset)
    mapper_flat = {k: v for k, v in values.items() if k not in node_names}
    mcfg = apply_overrides(base, mapper_flat)
    return ncfg, mcfg


def declare_all(node) -> tuple[NodeConfig, MapperConfig]:
    """Declare every parameter on ``node`` and return the validated configs (ConfigError if invalid)."""
    p0 = next(p for p in ros_params() if p.name == "preset")
    pre = node.declare_parameter("preset", p0.default, descriptor(p0)).value
    if pre != "none" and pre not in PRESETS:
        raise ConfigError(f"preset: {pre!r} is not one of {['none'] + sorted(PRESETS)}")
    values: dict[str, Any] = {"preset": pre}
    for p in ros_params(pre):
        if p.name == "preset":
            continue
        v = node.declare_parameter(p.name, _ros_value(p), descriptor(p)).value
        values[p.name] = coerce_value(v, p.default)
    return build_configs(values)


def generate_yaml(preset_name: str = NodeConfig.preset) -> str:
    """The text of config/mapper.yaml: every parameter with its default, docs as comments."""
    params = ros_params(preset_name)
    lines = [
        "# GENERATED by `python -m neural_mapping.ros.params > config/mapper.yaml` from the config",
        "# dataclasses (neural_mapping/config.py and neural_mapping/ros/params.py). Do not edit by hand:",
        "# a test checks this file is in sync. Values here override the preset; MapperConfig values",
        f"# below are the '{preset_name}' preset's (regenerate with --preset to change).",
        "/**:",
        "  ros__parameters:",
    ]
    groups: dict[str, list[RosParam]] = {}
    for p in params:
        if "." in p.name:
            groups.setdefault(p.name.split(".", 1)[0], []).append(p)
        else:
            groups.setdefault("", []).append(p)

    def dump(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()

    def comment(p: RosParam) -> str:
        extra = ""
        if p.choices:
            extra = f" [{' | '.join(map(str, p.choices))}]"
        elif p.lo is not None or p.hi is not None:
            extra = f" [{'' if p.lo is None else p.lo}, {'' if p.hi is None else p.hi}]"
        return f"{p.doc}{extra}{' (runtime)' if p.runtime else ''}"

    for p in groups.pop(""):
        lines.append(f"    # {comment(p)}")
        lines.append(f"    {p.name}: {dump(p.default)}")
    for g, ps in groups.items():
        lines.append(f"    {g}:")
        for p in ps:
            lines.append(f"      # {comment(p)}")
            lines.append(f"      {p.name.split('.', 1)[1]}: {dump(p.default)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate config/mapper.yaml from the config dataclasses.")
    ap.add_argument("--preset", default=NodeConfig.preset, choices=("none",) + tuple(PRESETS))
    ap.add_argument("--check", metavar="FILE", help="exit 1 if FILE differs from the generated text")
    args = ap.parse_args(argv)
    text = generate_yaml(args.preset)
    if args.check:
        with open(args.check) as fh:
            same = fh.read() == text
        if not same:
            print(f"{args.check} is out of date: run python -m neural_mapping.ros.params > {args.check}", file=sys.stderr)
        return 0 if same else 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
