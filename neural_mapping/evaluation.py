"""Evaluation: mesh accuracy/completion/F-score, depth L1, PSNR, SDF error (TSDF baseline: tsdf_baseline.py).

Mesh metrics follow the usual definitions (iMAP, NICE-SLAM, Co-SLAM), with exact
point-to-mesh distances (Open3D ray-casting scene) instead of point-to-point:

- accuracy: mean distance from points sampled on the predicted mesh to the GT mesh;
- completion: mean distance from points sampled on the GT mesh to the predicted mesh;
- completion ratio @ t: fraction of GT points within t of the prediction;
- precision / recall @ t: fraction of predicted points within t of GT / of GT points
  within t of the prediction; F-score = 2PR / (P + R);
- Chamfer-L1 = (accuracy + completion) / 2.

With frames, GT points are restricted to those some frame saw: in a frame's image,
not occluded (their depth agrees with a ray cast of the GT mesh from that pose) and
where the frame has a valid depth measurement.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from neural_mapping.frame import Frame


# ----------------------------------------------------------------------------- sampling / distances


def sample_surface(mesh, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) points uniformly distributed (by area) on a triangle mesh (open3d legacy)."""
    V = np.asarray(mesh.vertices, dtype=np.float64)
    F = np.asarray(mesh.triangles, dtype=np.int64)
    if len(F) == 0:
        return np.zeros((0, 3))
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(F), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    u, v = 1 - s, s * (1 - r2)
    w = s * r2
    return u[:, None] * a[tri] + v[:, None] * b[tri] + w[:, None] * c[tri]


def _scene(mesh):
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return scene


def distance_to_mesh(pts: np.ndarray, mesh, chunk: int = 1 << 19) -> np.ndarray:
    """(N,) unsigned distance (m) from points (N, 3) to a triangle mesh; inf for an empty mesh."""
    import open3d as o3d

    pts = np.asarray(pts, dtype=np.float32)
    if len(np.asarray(mesh.triangles)) == 0:
        return np.full(len(pts), np.inf)
    scene = _scene(mesh)
    out = np.empty(len(pts), np.float64)
    for a in range(0, len(pts), chunk):
        q = o3d.core.Tensor(pts[a:a + chunk])
        out[a:a + chunk] = scene.compute_distance(q).numpy()
    return out


def signed_distance_to_mesh(pts: np.ndarray, mesh) -> np.ndarray:
    """(N,) signed distance (negative inside) to a closed mesh, for SDF error measurements."""
    import open3d as o3d

    scene = _scene(mesh)
    return scene.compute_signed_distance(o3d.core.Tensor(np.asarray(pts, dtype=np.float32))).numpy().astype(np.float64)


def visible_mask(pts_W: np.ndarray, gt_mesh, frames: Iterable[Frame], tol_m: float = 0.03,
                 max_depth_m: float | None = None) -> np.ndarray:
    """(N,) bool: the point was seen by some frame (in view, unoccluded, valid depth there)."""
    import open3d as o3d

    pts_W = np.asarray(pts_W, dtype=np.float64)
    seen = np.zeros(len(pts_W), bool)
    scene = _scene(gt_mesh)
    for f in frames:
        H, W = f.height, f.width
        T_CW = np.linalg.inv(f.T_WC)
        p_C = pts_W @ T_CW[:3, :3].T + T_CW[:3, 3]
        z = p_C[:, 2]
        front = z > 1e-6
        u = np.full(len(z), -1.0)
        v = np.full(len(z), -1.0)
        u[front] = f.K[0, 0] * p_C[front, 0] / z[front] + f.K[0, 2]
        v[front] = f.K[1, 1] * p_C[front, 1] / z[front] + f.K[1, 2]
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        inview = front & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
        if max_depth_m is not None:
            inview &= z <= max_depth_m
        idx = np.flatnonzero(inview & ~seen)
        if len(idx) == 0:
            continue
        measured = f.depth_m[vi[idx], ui[idx]]
        # ray from the camera centre to the point: unoccluded if the first hit is the point itself
        o = f.T_WC[:3, 3]
        d = pts_W[idx] - o
        dist = np.linalg.norm(d, axis=1)
        rays = np.concatenate([np.broadcast_to(o, d.shape), d / dist[:, None]], 1).astype(np.float32)
        t_hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        ok = (t_hit >= dist - tol_m) & (measured > 0)
        seen[idx[ok]] = True
    return seen


# ----------------------------------------------------------------------------- mesh metrics


@dataclass
class MeshMetrics:
    """Reconstruction quality of a predicted mesh against a ground-truth mesh."""

    accuracy_cm: float
    completion_cm: float
    chamfer_l1_cm: float
    completion_ratio_5cm: float
    precision_2cm: float
    recall_2cm: float
    fscore_2cm: float
    precision_5cm: float
    recall_5cm: float
    fscore_5cm: float
    n_pred_points: int
    n_gt_points: int
    gt_visible_fraction: float = 1.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """A short human-readable table."""
        rows = [
            ("accuracy", f"{self.accuracy_cm:.2f} cm"),
            ("completion", f"{self.completion_cm:.2f} cm"),
            ("Chamfer-L1", f"{self.chamfer_l1_cm:.2f} cm"),
            ("completion ratio @5cm", f"{100 * self.completion_ratio_5cm:.1f} %"),
            ("precision / recall / F @2cm",
             f"{100 * self.precision_2cm:.1f} / {100 * self.recall_2cm:.1f} / {100 * self.fscore_2cm:.1f} %"),
            ("precision / recall / F @5cm",
             f"{100 * self.precision_5cm:.1f} / {100 * self.recall_5cm:.1f} / {100 * self.fscore_5cm:.1f} %"),
            ("points (pred / gt)", f"{self.n_pred_points} / {self.n_gt_points}"),
            ("GT seen by frames", f"{100 * self.gt_visible_fraction:.1f} %"),
        ]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def _fscore(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def gt_points(gt_mesh, n_points: int = 200_000, frames: Iterable[Frame] | None = None, seed: int = 0,
              visibility_tol_m: float = 0.03) -> tuple[np.ndarray, float]:
    """(GT surface points, the fraction of them seen): samples of ``gt_mesh``, those ``frames`` saw."""
    gt_pts = sample_surface(gt_mesh, n_points, seed=seed)
    if len(gt_pts) == 0:
        raise ValueError("the ground-truth mesh has no surface")
    vis_frac = 1.0
    if frames is not None:
        vis = visible_mask(gt_pts, gt_mesh, frames, tol_m=visibility_tol_m)
        vis_frac = float(vis.mean())
        if not vis.any():
            raise ValueError("no ground-truth surface is visible from the given frames")
        gt_pts = gt_pts[vis]
    return gt_pts, vis_frac


def mesh_metrics(pred_mesh, gt_mesh, n_points: int = 200_000, frames: Iterable[Frame] | None = None,
                 seed: int = 0, visibility_tol_m: float = 0.03, gt: tuple | None = None) -> MeshMetrics:
    """Compare two meshes (see the module doc); ``frames`` restricts GT to what they saw;
    ``gt`` (from :func:`gt_points`) reuses GT points across predictions."""
    gt_pts, vis_frac = gt if gt is not None else gt_points(gt_mesh, n_points, frames, seed, visibility_tol_m)
    pred_pts = sample_surface(pred_mesh, n_points, seed=seed + 1)
    if len(pred_pts) == 0:
        return MeshMetrics(float("inf"), float("inf"), float("inf"), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                           0, len(gt_pts), vis_frac)
    d_acc = distance_to_mesh(pred_pts, gt_mesh)  # pred -> gt
    d_comp = distance_to_mesh(gt_pts, pred_mesh)  # gt -> pred
    acc, comp = float(d_acc.mean()), float(d_comp.mean())
    p2, r2 = float((d_acc < 0.02).mean()), float((d_comp < 0.02).mean())
    p5, r5 = float((d_acc < 0.05).mean()), float((d_comp < 0.05).mean())
    return MeshMetrics(
        accuracy_cm=100 * acc, completion_cm=100 * comp, chamfer_l1_cm=100 * (acc + comp) / 2,
        completion_ratio_5cm=r5, precision_2cm=p2, recall_2cm=r2, fscore_2cm=_fscore(p2, r2),
        precision_5cm=p5, recall_5cm=r5, fscore_5cm=_fscore(p5, r5),
        n_pred_points=len(pred_pts), n_gt_points=len(gt_pts), gt_visible_fraction=vis_frac,
    )


# ----------------------------------------------------------------------------- images and fields


def depth_l1(pred_m: np.ndarray, gt_m: np.ndarray) -> float:
    """Mean |pred - gt| (m) over pixels where both depths are valid (> 0); nan if none."""
    pred_m, gt_m = np.asarray(pred_m, np.float64), np.asarray(gt_m, np.float64)
    if pred_m.shape != gt_m.shape:
        raise ValueError(f"depth shapes differ: {pred_m.shape} vs {gt_m.shape}")
    ok = (pred_m > 0) & (gt_m > 0) & np.isfinite(pred_m) & np.isfinite(gt_m)
    return float(np.abs(pred_m[ok] - gt_m[ok]).mean()) if ok.any() else float("nan")


def psnr(pred: np.ndarray, gt: np.ndarray, max_val: float | None = None) -> float:
    """Peak signal-to-noise ratio (dB). uint8 images use 255, floats 1.0 unless given."""
    pred_a, gt_a = np.asarray(pred), np.asarray(gt)
    if pred_a.shape != gt_a.shape:
        raise ValueError(f"image shapes differ: {pred_a.shape} vs {gt_a.shape}")
    if max_val is None:
        max_val = 255.0 if gt_a.dtype == np.uint8 else 1.0
    mse = float(np.mean((pred_a.astype(np.float64) - gt_a.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(max_val ** 2 / mse))


@dataclass
class SdfError:
    mean_abs_m: float
    median_abs_m: float
    max_abs_m: float
    n: int


def sdf_error(pred_sdf: np.ndarray, gt_sdf: np.ndarray, band_m: float | None = None) -> SdfError:
    """|pred - gt| statistics, optionally only where |gt| < band_m (near the surface)."""
    pred_sdf, gt_sdf = np.asarray(pred_sdf, np.float64), np.asarray(gt_sdf, np.float64)
    if pred_sdf.shape != gt_sdf.shape:
        raise ValueError(f"sdf shapes differ: {pred_sdf.shape} vs {gt_sdf.shape}")
    ok = np.isfinite(pred_sdf) & np.isfinite(gt_sdf)
    if band_m is not None:
        ok &= np.abs(gt_sdf) < band_m
    e = np.abs(pred_sdf[ok] - gt_sdf[ok])
    if len(e) == 0:
        return SdfError(float("nan"), float("nan"), float("nan"), 0)
    return SdfError(float(e.mean()), float(np.median(e)), float(e.max()), int(len(e)))


# ----------------------------------------------------------------------------- distances (iSDF's protocol)

#: true-distance bins (m) of the distance errors
DISTANCE_BINS = ((0.0, 0.1), (0.1, 0.5), (0.5, 1.0), (1.0, 2.0))


def free_space_points(frames: list[Frame], n: int, seed: int = 0, max_depth_m: float = 6.0) -> np.ndarray:
    """(n, 3) points in observed free space: on random valid rays of random frames, uniformly between
    the camera and 97 % of the measured depth (so a sensor's noise does not put them behind surfaces)."""
    rng = np.random.default_rng(seed)
    out = []
    per = max(1, int(np.ceil(n / max(1, len(frames)))))
    for f in frames:
        v, u = np.nonzero((f.depth_m > 0) & (f.depth_m < max_depth_m))
        if len(v) == 0:
            continue
        k = rng.integers(0, len(v), per)
        z = f.depth_m[v[k], u[k]] * rng.uniform(0.0, 0.97, per)
        p_C = np.stack([(u[k] - f.K[0, 2]) / f.K[0, 0] * z, (v[k] - f.K[1, 2]) / f.K[1, 1] * z, z], 1)
        out.append(p_C @ f.T_WC[:3, :3].T + f.T_WC[:3, 3])
    pts = np.concatenate(out) if out else np.zeros((0, 3))
    return pts[rng.permutation(len(pts))[:n]]


def distance_and_gradient(pts: np.ndarray, mesh) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned distance (N,) to a mesh and its gradient (N, 3), the unit vector from the closest point.

    In observed free space this is the signed distance (RaycastingScene.compute_signed_distance gives
    the same there, but its sign is unreliable on meshes that are not closed, e.g. Replica's)."""
    import open3d as o3d

    p = np.asarray(pts, np.float32)
    ans = _scene(mesh).compute_closest_points(o3d.core.Tensor(p))
    diff = p.astype(np.float64) - ans["points"].numpy().astype(np.float64)
    d = np.linalg.norm(diff, axis=1)
    return d, diff / np.maximum(d, 1e-9)[:, None]


def distance_errors(true_d: np.ndarray, true_g: np.ndarray, pred_d: np.ndarray, pred_g: np.ndarray,
                    bins=DISTANCE_BINS) -> list[dict]:
    """Per true-distance bin: mean |distance error| (cm) and mean gradient cosine error 1 - cos."""
    out = []
    pn = np.linalg.norm(pred_g, axis=1)
    cos = np.sum(pred_g * true_g, 1) / np.maximum(pn, 1e-9)
    for lo, hi in bins:
        m = (true_d >= lo) & (true_d < hi) & np.isfinite(pred_d) & np.isfinite(cos)
        n = int(m.sum())
        out.append({"bin_m": [lo, hi], "n": n,
                    "mean_abs_cm": float(100 * np.abs(pred_d[m] - true_d[m]).mean()) if n else float("nan"),
                    "grad_cos_err": float((1 - cos[m]).mean()) if n else float("nan")})
    return out


# ----------------------------------------------------------------------------- TSDF baseline

from neural_mapping.tsdf_baseline import TsdfResult, tsdf_baseline  # noqa: E402  (moved; old import path kept)


__all__ = [
    "sample_surface", "distance_to_mesh", "signed_distance_to_mesh", "visible_mask", "MeshMetrics",
    "mesh_metrics", "gt_points", "free_space_points", "distance_and_gradient", "distance_errors", "DISTANCE_BINS",
    "depth_l1", "psnr", "SdfError", "sdf_error", "TsdfResult", "tsdf_baseline",
]
