"""Configuration dataclasses: the single source of defaults, docs and validation.

Every field is declared with :func:`param`, which records a one-line doc and its
valid range or choices. From these the project derives, never by a second list:
the ROS parameter declarations (dotted names ``group.field``), ``config/mapper.yaml``,
the README's configuration reference and YAML load/save.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def param(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
          choices: tuple | None = None, runtime: bool = False):
    """A config field with its one-line doc and validation bounds.

    ``lo``/``hi`` are inclusive bounds for numbers (and for every element of a list);
    ``choices`` lists the allowed values; ``runtime`` marks values that may change
    while the node runs.
    """
    md = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "runtime": runtime}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return field(default=default, metadata=md)


class ConfigGroup:
    """Base for config groups (here and ros/params.NodeConfig): validates every field from its metadata."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "doc" not in f.metadata:
                continue
            name = f"{getattr(self, '_prefix', '')}{f.name}"
            v = getattr(self, f.name)
            want = type(f.default) if f.default is not dataclasses.MISSING else None
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
                setattr(self, f.name, v)
            if want is not None and want is not type(None) and not isinstance(v, want):
                raise ConfigError(f"{name}: expected {want.__name__}, got {type(v).__name__} {v!r}")
            md = f.metadata
            if md["choices"] is not None and v not in md["choices"]:
                raise ConfigError(f"{name}: {v!r} is not one of {list(md['choices'])}")
            vals = v if isinstance(v, list) else [v]
            for x in vals:
                if isinstance(x, (int, float)) and not isinstance(x, bool):
                    if md["lo"] is not None and x < md["lo"]:
                        raise ConfigError(f"{name}: {x} is below the minimum {md['lo']}")
                    if md["hi"] is not None and x > md["hi"]:
                        raise ConfigError(f"{name}: {x} is above the maximum {md['hi']}")
        self.check()

    def check(self) -> None:
        """Cross-field validation; override in groups that need it."""


@dataclass
class EncodingConfig(ConfigGroup):
    _prefix = "encoding."

    kind: str = param("hashgrid", "Position encoding of the field", choices=("hashgrid", "fourier", "gaussian", "none", "spline"))
    fourier_freqs: int = param(8, "fourier: number of octaves L (sin/cos at 2^0..2^(L-1)*pi)", lo=1, hi=16)
    gaussian_features: int = param(128, "gaussian: number of random Fourier features", lo=1, hi=4096)
    gaussian_sigma: float = param(4.0, "gaussian: std of the random frequencies (1/m)", lo=1e-3, hi=1e4)
    hash_levels: int = param(16, "hashgrid: number of resolution levels", lo=1, hi=32)
    hash_features: int = param(2, "hashgrid: features per level", lo=1, hi=8)
    hash_log2_table: int = param(17, "hashgrid: log2 of the hash table size per level", lo=8, hi=24)
    hash_base_res: int = param(16, "hashgrid: coarsest grid resolution (cells across the bounds)", lo=2, hi=1024)
    hash_finest_m: float = param(0.02, "hashgrid: cell size of the finest level (m)", lo=1e-3, hi=1.0)
    hash_extent_m: float = param(8.0, "hashgrid: nominal extent (m) spanned by hash_base_res coarsest cells; also scales fourier inputs", lo=0.1, hi=1000.0)
    fast_cpu_kernel: bool = param(True, "hashgrid: on CPU use the fused C++/OpenMP kernel when it is built (else, and on CUDA, pure PyTorch)")
    dir_encoding: str = param("sh", "View-direction encoding of colour heads", choices=("sh", "fourier", "none"))
    sh_degree: int = param(4, "sh: spherical-harmonics degree (bands 0..degree: 1..4 -> 4..25 coefficients)", lo=1, hi=4)


@dataclass
class FieldConfig(ConfigGroup):
    _prefix = "field."

    kind: str = param("sdf", "Field kind: signed distance or NeRF radiance field", choices=("sdf", "nerf"))
    trunk: str = param("mlp", "Trunk network: MLP or SIREN", choices=("mlp", "siren"))
    activation: str = param("relu", "MLP activation", choices=("relu", "softplus", "sine"))
    hidden: int = param(64, "Hidden units per layer", lo=8, hi=1024)
    layers: int = param(2, "Hidden layers of the trunk", lo=1, hi=16)
    color_hidden: int = param(64, "Hidden units of the colour head", lo=8, hi=1024)
    color_head: str = param("plain", "Colour head: plain (features + view direction) or reflective (Ref-NeRF: view reflected about the normal, IDE, diffuse + specular)", choices=("plain", "reflective"))
    geo_features: int = param(15, "Features passed from the trunk to the colour head", lo=0, hi=256)
    siren_omega0: float = param(30.0, "SIREN: omega_0 of the first layer", lo=1.0, hi=100.0)
    include_xyz: bool = param(True, "Feed the raw position (divided by encoding.hash_extent_m) to the trunk beside the encoding")
    margin_m: float = param(0.15, "Margin added around observed points when growing the bounds (m)", lo=0.0, hi=5.0)


@dataclass
class RenderConfig(ConfigGroup):
    _prefix = "render."

    n_stratified: int = param(16, "Stratified samples per ray between near and far", lo=0, hi=1024)
    n_surface: int = param(16, "Depth-guided samples per ray near the measured depth", lo=0, hi=1024)
    surface_std_m: float = param(0.05, "Std of depth-guided samples around the measured depth (m)", lo=1e-4, hi=1.0)
    near_m: float = param(0.05, "Near plane of rays (m)", lo=0.0, hi=10.0)
    far_m: float = param(8.0, "Far plane of rays (m)", lo=0.1, hi=100.0)
    sdf_beta: float = param(0.05, "SDF->weight sharpness (m) for rendering an SDF map", lo=1e-4, hi=1.0)
    render_samples: int = param(96, "Samples per ray when rendering views", lo=8, hi=2048)
    max_depth_m: float = param(6.0, "Depth beyond this is ignored (m)", lo=0.1, hi=100.0)
    min_depth_m: float = param(0.1, "Depth below this is ignored (m)", lo=0.0, hi=10.0)

    def check(self) -> None:
        if self.far_m <= self.near_m:
            raise ConfigError(f"render.far_m ({self.far_m}) must exceed render.near_m ({self.near_m})")
        if self.max_depth_m <= self.min_depth_m:
            raise ConfigError("render.max_depth_m must exceed render.min_depth_m")


@dataclass
class TrainConfig(ConfigGroup):
    _prefix = "train."

    rays_per_step: int = param(4096, "Rays sampled per training step", lo=16, hi=1 << 20)
    lr: float = param(1e-2, "Learning rate of the encoding (Adam)", lo=1e-6, hi=1.0)
    lr_mlp: float = param(2e-3, "Learning rate of the MLP weights (Adam)", lo=1e-6, hi=1.0)
    truncation_m: float = param(0.10, "SDF truncation band (m)", lo=1e-3, hi=2.0)
    truncation_back: float = param(1.0, "Depth of the SDF band behind the measured surface, as a fraction of truncation_m (< 1: thinner objects at depth edges, but surfaces can vanish from meshes, see RESULTS.md)", lo=0.05, hi=1.0)
    edge_jump_m: float = param(0.10, "Depth jump (m) to a 4-neighbour (or a neighbour without depth) that marks a silhouette pixel; behind the surface the SDF band of a ray is no deeper than the ray's lateral distance to the nearest silhouette (objects do not grow past their outline); 0: off", lo=0.0, hi=10.0)
    behind_prior: bool = param(True, "Samples behind the SDF band (up to truncation_m behind the surface) get a weak sdf <= 0 prior in the free-space loss")
    w_sdf: float = param(1000.0, "Weight of the SDF loss inside the truncation band", lo=0.0)
    w_free: float = param(100.0, "Weight of the free-space loss in front of the band (sdf fields)", lo=0.0)
    w_sdf_bound: float = param(0.0, "Weight of the iSDF-style distance bound on free samples beyond the band (sdf "
                                     "fields; 0 = off: on, it lowered 2D occupancy quality and did not yet meet the "
                                     "distance targets, see RESULTS.md)", lo=0.0)
    w_free_nerf: float = param(10.0, "Weight of the free-space loss (nerf fields: no rendering weight in front of the surface)", lo=0.0)
    w_eikonal: float = param(0.0, "Weight of the eikonal loss (|grad| = 1)", lo=0.0)
    w_depth: float = param(0.1, "Weight of the rendered depth loss (sdf fields)", lo=0.0)
    w_depth_nerf: float = param(10.0, "Weight of the rendered depth loss (nerf fields: depth supervision)", lo=0.0)
    w_color: float = param(50.0, "Weight of the colour loss", lo=0.0)
    latest_frame_fraction: float = param(0.3, "Fraction of rays taken from the latest frame", lo=0.0, hi=1.0)
    steps_per_frame: int = param(5, "Offline runner: training steps after each frame when not --realtime", lo=0, hi=10000)
    seed: int = param(0, "Random seed", lo=0)


@dataclass
class KeyframeConfig(ConfigGroup):
    _prefix = "keyframes."

    min_translation_m: float = param(0.10, "New keyframe after this much translation (m)", lo=0.0)
    min_rotation_deg: float = param(10.0, "New keyframe after this much rotation (deg)", lo=0.0, hi=180.0)
    max_keyframes: int = param(200, "Maximum keyframes kept (oldest low-loss dropped first)", lo=1)
    max_mb: float = param(512.0, "Maximum memory of the keyframe buffer (MB)", lo=1.0)
    downsample: int = param(1, "Keep every n-th pixel of keyframes (1 = full resolution)", lo=1, hi=16)


@dataclass
class MeshConfig(ConfigGroup):
    _prefix = "mesh."

    voxel_m: float = param(0.02, "Marching-cubes voxel size (m)", lo=1e-3, hi=1.0)
    min_component_triangles: int = param(200, "Drop connected fragments with fewer triangles", lo=0)
    color: bool = param(True, "Colour mesh vertices from the field")


@dataclass
class OccupancyConfig(ConfigGroup):
    _prefix = "occupancy."

    resolution_m: float = param(0.05, "Occupancy voxel / cell size (m)", lo=1e-3, hi=5.0)
    z_min: float = param(0.1, "Lower bound of the 2D slice height band (m)", runtime=True)
    z_max: float = param(1.5, "Upper bound of the 2D slice height band (m)", runtime=True)
    esdf_height: float = param(0.5, "Height of the ESDF slice (m)", runtime=True)
    occupied_sdf_m: float = param(0.0, "Cells with sdf below this (plus half a cell) are occupied (m)", lo=-1.0, hi=1.0)

    def check(self) -> None:
        if self.z_max <= self.z_min:
            raise ConfigError(f"occupancy.z_max ({self.z_max}) must exceed occupancy.z_min ({self.z_min})")


@dataclass
class PriorConfig(ConfigGroup):
    _prefix = "prior."

    enabled: bool = param(False, "SDF fields: fuse every frame into a coarse TSDF (neural_mapping/sdf_prior.py) that the "
                                "network refines (sdf = network + prior, H2-Mapping style); nerf fields ignore it")
    voxel_m: float = param(0.04, "Voxel size of the fused prior (m)", lo=0.005, hi=1.0)
    trunc_voxels: float = param(3.0, "Truncation of the prior in voxels", lo=1.0, hi=20.0)
    full_weight: float = param(1.0, "Fusion weight (frames) at which the prior is fully trusted; below it the TSDF is "
                                     "blended with the network's initial +truncation, which moves surfaces seen by few "
                                     "frames behind them (measured: 2 cm on the floor at 4)", lo=1.0, hi=1000.0)
    max_weight: float = param(64.0, "Cap of the fusion weight (later frames still move the average)", lo=1.0, hi=1e5)
    stride: int = param(2, "Fuse every n-th pixel of each frame", lo=1, hi=16)
    behind_voxels: float = param(8.0, "Depth behind the measured surface (voxels) recorded as probably inside, used only "
                                      "where no view measured: keeps the field negative behind surfaces (no second sheet "
                                      "behind the band)", lo=0.0, hi=50.0)


from neural_mapping.viewer.config import ViewerConfig  # noqa: E402 - after param/ConfigGroup, which it uses
from neural_mapping.region_config import MapRegionConfig  # noqa: E402 - after param/ConfigGroup, which it uses
from neural_mapping.submaps_config import SubmapsConfig  # noqa: E402 - after param/ConfigGroup, which it uses


@dataclass
class MapperConfig(ConfigGroup):
    """Everything the core needs. Groups map to dotted ROS parameter names."""

    device: str = param("auto", "Compute device: auto (cuda when available), cpu or cuda", choices=("auto", "cpu", "cuda"))
    encoding: EncodingConfig = dataclasses.field(default_factory=EncodingConfig)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    keyframes: KeyframeConfig = dataclasses.field(default_factory=KeyframeConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    prior: PriorConfig = dataclasses.field(default_factory=PriorConfig)
    occupancy: OccupancyConfig = dataclasses.field(default_factory=OccupancyConfig)
    map: MapRegionConfig = dataclasses.field(default_factory=MapRegionConfig)
    viewer: ViewerConfig = dataclasses.field(default_factory=ViewerConfig)
    submaps: SubmapsConfig = dataclasses.field(default_factory=SubmapsConfig)


#: Presets: overrides on top of the defaults, as dotted names.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "device": "cpu",
        "encoding.hash_log2_table": 17,
        "train.rays_per_step": 2048,
        "render.n_stratified": 8,
        "render.n_surface": 12,
        "keyframes.downsample": 2,
    },
    # GPU (issue 15): 16k rays x 40 samples = 655k points a step, ~20M points/s at 30 steps/s beside 30 Hz
    # full-resolution (downsample 1) input, every frame integrated (the runner's frames_per_step, 16, drains
    # the queue between steps); sizes chosen without a device, to be checked by benchmarks/device_check.sh
    "gpu": {
        "device": "cuda",
        "encoding.hash_log2_table": 19,
        "train.rays_per_step": 16384,
        "render.n_stratified": 16,
        "render.n_surface": 24,
        "field.hidden": 64,
        "keyframes.downsample": 1,
    },
}


# ----------------------------------------------------------------------------- introspection


def iter_params(cfg_cls: type = MapperConfig) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted_name, field, default) for every leaf parameter, in declaration order."""
    for f in dataclasses.fields(cfg_cls):
        if "doc" in f.metadata:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield f.name, f, default
        else:
            sub = f.default_factory
            for g in dataclasses.fields(sub):
                if "doc" in g.metadata:
                    default = g.default if g.default is not dataclasses.MISSING else g.default_factory()
                    yield f"{f.name}.{g.name}", g, default


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_flat(cfg: MapperConfig) -> dict[str, Any]:
    """Dotted name -> value."""
    out: dict[str, Any] = {}
    for name, _, _ in iter_params(type(cfg)):
        obj = cfg
        for part in name.split("."):
            obj = getattr(obj, part)
        out[name] = obj
    return out


def from_dict(d: dict | None, base: MapperConfig | None = None) -> MapperConfig:
    """Build a config from a nested dict (as in YAML); unknown keys are an error."""
    d = dict(d or {})
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = v2
        else:
            flat[k] = v
    return apply_overrides(base or MapperConfig(), flat)


def apply_overrides(cfg: MapperConfig, flat: dict[str, Any]) -> MapperConfig:
    """A new config with dotted-name overrides applied and validated."""
    known = {name for name, _, _ in iter_params(type(cfg))}
    nested = to_dict(cfg)
    for k, v in flat.items():
        if k not in known:
            raise ConfigError(f"{k}: unknown configuration key")
        if "." in k:
            g, n = k.split(".", 1)
            nested[g][n] = v
        else:
            nested[k] = v
    groups = {f.name: f.default_factory for f in dataclasses.fields(MapperConfig) if "doc" not in f.metadata}
    kwargs = {}
    for k, v in nested.items():
        if k in groups:
            kwargs[k] = groups[k](**v)
        else:
            kwargs[k] = v
    return MapperConfig(**kwargs)


def preset(name: str) -> MapperConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset: {name!r} is not one of {sorted(PRESETS)}")
    return apply_overrides(MapperConfig(), PRESETS[name])


def load_yaml(path: str | Path, base: MapperConfig | None = None) -> MapperConfig:
    """Load a config YAML (plain nested dict, or a ROS params file with ros__parameters)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    # ROS params file: {node_name: {ros__parameters: {...}}}
    ros = False
    for v in data.values():
        if isinstance(v, dict) and "ros__parameters" in v:
            data, ros = v["ros__parameters"], True
            break
    known = {f.name for f in dataclasses.fields(MapperConfig)}
    for k, v in data.items():  # a ROS params file also holds the node's own (scalar) parameters
        if k not in known and (isinstance(v, dict) or not ros):
            raise ConfigError(f"{k}: unknown configuration {'section' if isinstance(v, dict) else 'key'} (in {p})")
    data = {k: v for k, v in data.items() if k in known}
    return from_dict(data, base)


def save_yaml(cfg: MapperConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def reference_markdown() -> str:
    """The README's configuration reference, generated from the dataclasses."""
    lines = ["| parameter | default | range / choices | description |", "|---|---|---|---|"]
    for name, f, default in iter_params():
        md = f.metadata
        if md["choices"]:
            rng = " / ".join(str(c) for c in md["choices"])
        elif md["lo"] is not None or md["hi"] is not None:
            rng = f"[{'' if md['lo'] is None else md['lo']}, {'' if md['hi'] is None else md['hi']}]"
        else:
            rng = ""
        doc = md["doc"] + (" (changeable at runtime)" if md["runtime"] else "")
        lines.append(f"| `{name}` | `{default}` | {rng} | {doc} |")
    return "\n".join(lines)


README_BEGIN = "<!-- config-reference:begin (generated by: python -m neural_mapping.config --update-readme) -->"
README_END = "<!-- config-reference:end -->"


def update_readme(path: str | Path) -> bool:
    """Rewrite the README's configuration reference between its markers; True if it changed."""
    p = Path(path)
    text = p.read_text()
    i, j = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    new = text[:i] + "\n" + reference_markdown() + "\n" + text[j:]
    if new != text:
        p.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if "--update-readme" in sys.argv:
        print("README updated" if update_readme(Path(__file__).resolve().parents[1] / "README.md") else "README up to date")
    else:
        print(reference_markdown())
