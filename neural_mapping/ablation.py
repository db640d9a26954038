"""The lecture's claims as one experiment: every representation trained on the same frames, budget, seed.

A :class:`Variant` is a name and config overrides on a common base (:data:`BASE`). Each one is
trained with :func:`~neural_mapping.runner.run_mapping` on the same frames (held-out every
n-th), all frames added first and then ``seconds`` of training (the budget is wall time,
so a slow encoding gets fewer steps), the same seed. Then it is measured (:func:`measure`):
held-out PSNR and depth L1 (the runner's), mesh F@5cm and Chamfer against a ground-truth mesh,
the eikonal error ``| |grad f| - 1 |`` near its own surface (SDF), its normals against the GT
mesh's (degrees), the Laplacian magnitude on its surface (SDF; second derivatives by
autograd: a ReLU trunk has none, trilinear grids none inside a cell), training time and
parameters. The mirror variants are NeRFs on the synthetic mirror room (no depth loss), where
:func:`phantom_area` measures the surface a map puts behind the mirror plane.

The claims (:func:`judge_claims`) turn the rows into held / did not hold, with the numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from neural_mapping.config import MapperConfig, apply_overrides, preset
from neural_mapping.runner import RunOptions, eval_stride, run_mapping

#: common settings of every variant (the cpu preset, a coarser mesh for fast metrics)
BASE = {"device": "cpu", "train.rays_per_step": 1024, "render.n_stratified": 8, "render.n_surface": 8,
        "train.steps_per_frame": 0, "encoding.hash_levels": 12, "encoding.hash_log2_table": 16,
        "mesh.voxel_m": 0.05, "mesh.min_component_triangles": 50, "render.render_samples": 48}
_RELU = {"encoding.kind": "none", "field.trunk": "mlp", "field.activation": "relu"}
_ENCODINGS = {
    "relu": _RELU,
    "fourier": {"encoding.kind": "fourier"},
    "gaussian": {"encoding.kind": "gaussian"},
    "hashgrid": {"encoding.kind": "hashgrid"},
    "spline": {"encoding.kind": "spline", "encoding.hash_levels": 8},  # 8x the gathers of a hash level
    "siren": {"encoding.kind": "none", "field.trunk": "siren"},
}
_NO_DEPTH = {"train.w_depth_nerf": 0.0, "train.w_free_nerf": 0.0}
#: mirror scene: room behind the mirror plane inside the bounds, so a phantom can appear
_MIRROR = {"field.kind": "nerf", "encoding.kind": "hashgrid", "field.margin_m": 1.0, **_NO_DEPTH}


@dataclass
class Variant:
    name: str
    overrides: dict
    scene: str = "input"  # "input" or "mirror" (the synthetic mirror room)


def all_variants() -> list[Variant]:
    """sdf/<enc> for every encoding, nerf/<enc> where it applies (spline: an SDF encoding), the
    NeRF without depth supervision (claim 5) and the two mirror heads (claim 6)."""
    out = [Variant(f"sdf/{k}", {"field.kind": "sdf", **o}) for k, o in _ENCODINGS.items()]
    out += [Variant(f"nerf/{k}", {"field.kind": "nerf", **o}) for k, o in _ENCODINGS.items() if k != "spline"]
    out.append(Variant("nerf/hashgrid-nodepth", {"field.kind": "nerf", "encoding.kind": "hashgrid", **_NO_DEPTH}))
    out.append(Variant("mirror/plain", dict(_MIRROR), scene="mirror"))
    out.append(Variant("mirror/reflective", {**_MIRROR, "field.color_head": "reflective"}, scene="mirror"))
    return out


def select(names: list[str] | None) -> list[Variant]:
    vs = all_variants()
    if not names:
        return vs
    known = {v.name: v for v in vs}
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"unknown variants {bad}; known: {list(known)}")
    return [known[n] for n in names]


def variant_config(v: Variant, seed: int = 0) -> MapperConfig:
    return apply_overrides(preset("cpu"), {**BASE, "train.seed": seed, **v.overrides})


@dataclass
class Row:
    """One variant's measurements (nan where a metric does not apply or has no ground truth)."""

    name: str
    kind: str
    scene: str
    psnr_db: float = math.nan
    depth_l1_cm: float = math.nan
    hit_ratio: float = math.nan
    fscore_5cm: float = math.nan
    chamfer_cm: float = math.nan
    eikonal_err: float = math.nan
    normal_err_deg: float = math.nan
    laplacian: float = math.nan
    phantom_m2: float = math.nan
    train_s: float = math.nan
    steps: int = 0
    params: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- derivatives


def field_derivatives(fld, pts: np.ndarray, laplacian: bool = True, chunk: int = 4096):
    """(|grad f| (N,), laplacian f (N,) or None) of the field's value at pts, by autograd."""
    enc = fld.encoding
    fast = getattr(enc, "fast_cpu_kernel", None)
    if fast is not None:
        enc.fast_cpu_kernel = False  # the pure-PyTorch path: its second derivatives exist
    gn, lap = [], []
    try:
        for s in range(0, len(pts), chunk):
            p = torch.tensor(pts[s:s + chunk], dtype=torch.float32, requires_grad=True)
            v = fld(p).value
            (g,) = torch.autograd.grad(v.sum(), p, create_graph=laplacian)
            gn.append(g.norm(dim=-1).detach())
            if laplacian:
                tr = sum(torch.autograd.grad(g[:, a].sum(), p, retain_graph=a < 2)[0][:, a] for a in range(3))
                lap.append(tr.detach())
    finally:
        if fast is not None:
            enc.fast_cpu_kernel = fast
    return torch.cat(gn).numpy(), (torch.cat(lap).numpy() if laplacian else None)


def normal_error_deg(fld, gt_mesh, gt_pts: np.ndarray) -> float:
    """Mean angle (deg) between the field's normals and the GT mesh's face normals at GT points."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(gt_mesh))
    n_gt = scene.compute_closest_points(o3d.core.Tensor(gt_pts.astype(np.float32)))["primitive_normals"].numpy()
    n = np.concatenate([fld.normal(torch.tensor(gt_pts[s:s + 8192], dtype=torch.float32)).numpy()
                        for s in range(0, len(gt_pts), 8192)])
    cos = np.clip((n * n_gt).sum(1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).mean())


def phantom_area(mapper, lo: np.ndarray, hi: np.ndarray, voxel: float = 0.04) -> float:
    """Area (m^2) of the field's surface (the objective's level set) inside the box [lo, hi]."""
    from skimage.measure import marching_cubes, mesh_surface_area

    b = mapper.bounds()
    if b is None:
        return 0.0
    lo, hi = np.maximum(lo, b[0]), np.minimum(hi, b[1])
    if (hi - lo <= 2 * voxel).any():
        return 0.0
    axes = [np.arange(lo[a], hi[a], voxel) for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
    vals = mapper.query(grid.reshape(-1, 3)).sdf
    s = mapper.objective.surface_value(vals).reshape(grid.shape[:3])
    if s.min() >= 0 or s.max() <= 0:
        return 0.0
    v, f, _, _ = marching_cubes(s, 0.0, spacing=(voxel,) * 3)
    return float(mesh_surface_area(v, f))


# ----------------------------------------------------------------------------- one variant


@dataclass
class Pictures:
    """What the report draws of one variant: a held-out view and a horizontal slice."""

    view: np.ndarray | None = None  # (H, W, 3) float in [0, 1]
    view_depth: np.ndarray | None = None
    gt_view: np.ndarray | None = None
    gt_depth: np.ndarray | None = None
    slice: np.ndarray | None = None  # (H, W) surface value (sdf in m; nerf 0.5 - occupancy)
    kind: str = ""


def _held_out_pictures(mapper, held) -> Pictures:
    if not held:
        return Pictures(kind=mapper.cfg.field.kind)
    from neural_mapping.camera import stride_intrinsics

    _, f = held[len(held) // 2]
    s = eval_stride(f)
    r = mapper.render(f.T_WC, stride_intrinsics(f.K, s), f.depth_m[::s, ::s].shape[0], f.depth_m[::s, ::s].shape[1])
    return Pictures(r.color, r.depth, f.rgb[::s, ::s].astype(np.float32) / 255.0, f.depth_m[::s, ::s],
                    kind=mapper.cfg.field.kind)


def _slice(mapper, n: int = 96) -> np.ndarray | None:
    b = mapper.bounds()
    if b is None:
        return None
    lo, hi = b
    z = 0.5 * (lo[2] + hi[2])
    xs, ys = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], int(n * (hi[1] - lo[1]) / (hi[0] - lo[0])) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    pts = np.stack([X, Y, np.full_like(X, z)], -1).reshape(-1, 3)
    v = mapper.objective.surface_value(mapper.query(pts).sdf)
    return v.reshape(X.shape)[::-1]  # y up in the image


def measure(mapper, metrics, v: Variant, gt_mesh=None, gt=None, frames=None, phantom_box=None,
            n_surface_pts: int = 4000) -> Row:
    """A :class:`Row` for a trained map (see module doc); ``gt`` is (gt points, fraction seen)."""
    from neural_mapping.evaluation import mesh_metrics, sample_surface
    from neural_mapping.products import MeshExtractor

    kind = mapper.cfg.field.kind
    fld = mapper.field
    fld.eval()
    row = Row(v.name, kind, v.scene, psnr_db=metrics.held_out_psnr_db, depth_l1_cm=100 * metrics.held_out_depth_l1_m,
              hit_ratio=metrics.held_out_hit_ratio, train_s=metrics.train_s, steps=metrics.steps,
              params=int(sum(p.numel() for p in fld.parameters())))
    mesh = MeshExtractor(mapper, snapshot=False, color=False).extract(full=True)
    row.extra["mesh_triangles"] = len(mesh.triangles)
    if gt_mesh is not None and gt is not None:
        mm = mesh_metrics(mesh, gt_mesh, n_points=len(gt[0]), gt=gt)
        row.fscore_5cm, row.chamfer_cm = mm.fscore_5cm, mm.chamfer_l1_cm
        row.normal_err_deg = normal_error_deg(fld, gt_mesh, gt[0][:n_surface_pts])
    if kind == "sdf" and len(mesh.triangles):
        surf = sample_surface(mesh, n_surface_pts, seed=0)
        rng = np.random.default_rng(0)
        near = surf + rng.normal(0.0, mapper.cfg.train.truncation_m / 3, surf.shape)
        gnorm, _ = field_derivatives(fld, near, laplacian=False)
        row.eikonal_err = float(np.abs(gnorm - 1.0).mean())
        _, lap = field_derivatives(fld, surf[: n_surface_pts // 2])
        row.laplacian = float(np.abs(lap).mean())
        row.extra["laplacian_zero_fraction"] = float((np.abs(lap) < 1e-6).mean())
    if phantom_box is not None:
        row.phantom_m2 = phantom_area(mapper, *phantom_box)
    return row


def run_variant(v: Variant, frames: list, seconds: float, exclude_every: int, seed: int = 0, gt_mesh=None,
                gt=None, phantom_box=None) -> tuple[Row, Pictures]:
    """Train one variant on ``frames`` for ``seconds`` and measure it."""
    cfg = variant_config(v, seed)
    torch.manual_seed(seed)
    t = time.perf_counter()
    res = run_mapping(frames, cfg, RunOptions(exclude_every=exclude_every, extra_seconds=seconds, progress=False))
    run_s = time.perf_counter() - t
    if math.isnan(res.metrics.final_loss):
        raise RuntimeError(f"{v.name}: no training step (no usable frame?)")
    row = measure(res.mapper, res.metrics, v, gt_mesh, gt, frames[::5], phantom_box)
    row.extra["run_s"] = run_s
    pics = _held_out_pictures(res.mapper, res.held_out_frames)
    pics.slice = _slice(res.mapper)
    return row, pics
