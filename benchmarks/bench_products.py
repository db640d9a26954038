"""Benchmark of the map products (issue 4 targets). Prints figures; asserts nothing.

  .venv/bin/python benchmarks/bench_products.py [--quick] [--train-seconds S] [--json OUT]

1. Mesh extraction at 2 cm over the synthetic 5 x 4 x 2.6 m room:
   a. on an exact analytic SDF of the scene with the coverage of the real frames
      (isolates the extractor: field queries issued and time outside the field);
   b. on a learned map (cpu preset, trained for --train-seconds), timed end to end,
      with the mesh scored against the ground-truth mesh (visible surfaces).
2. Query throughput of the learned map: sdf only, and sdf + gradient (points/s).
3. 2D occupancy slice on the synthetic scene against the analytic ground truth of its
   boxes: IoU of occupied cells (over all cells, and over the columns some frame observed:
   interiors no frame saw stay unknown by design), cells marked free inside objects, and
   the fraction of never-observed cells (independent projection test) that are unknown,
   in 2D and 3D. Both on the exact SDF (isolates the products) and on the learned map.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neural_mapping import products as P  # noqa: E402
from neural_mapping.config import preset  # noqa: E402
from neural_mapping.coverage import Coverage  # noqa: E402
from neural_mapping.evaluation import mesh_metrics  # noqa: E402
from neural_mapping.io.synthetic import scene_parts, synthetic_sequence  # noqa: E402
from neural_mapping.mapper import Mapper  # noqa: E402
from neural_mapping.products.occupancy import band_heights  # noqa: E402


# ----------------------------------------------------------------------------- ground truth


def _box_sdf(p, lo, hi):
    c, h = (lo + hi) / 2, (hi - lo) / 2
    q = np.abs(p - c) - h
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def scene_sdf(p: np.ndarray) -> np.ndarray:
    """Exact SDF (m, positive in free space) of the synthetic scene's closed parts."""
    p = np.asarray(p, np.float64)
    d = np.full(len(p), np.inf)
    for name, (lo, hi) in scene_parts().items():
        if name == "cylinder":
            c = (lo + hi) / 2
            r = (hi[0] - lo[0]) / 2
            dr = np.linalg.norm(p[:, :2] - c[:2], axis=1) - r
            dz = np.abs(p[:, 2] - c[2]) - (hi[2] - lo[2]) / 2
            q = np.stack([dr, dz], 1)
            d = np.minimum(d, np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0))
        else:
            d = np.minimum(d, _box_sdf(p, lo, hi))
    return d


class AnalyticMap:
    """A map (products.MapView) answering with the exact scene SDF over a real coverage record;
    its field never changes, so it is its own snapshot."""

    def __init__(self, cfg, coverage, bounds):
        self.cfg, self.coverage, self._b = cfg, coverage, bounds
        self.lock = threading.RLock()
        self.stats = SimpleNamespace(steps=0)
        self.field = scene_sdf
        self.seconds = 0.0
        self.n = 0

    def bounds(self):
        return self._b

    def snapshot(self, into=None):
        return self

    def occupancy_from_value(self, vals):
        return (np.asarray(vals) <= 0).astype(np.float32)

    def query(self, pts_W, want_gradient=False, want_color=False, chunk=65536):
        t = time.perf_counter()
        s = scene_sdf(pts_W)
        self.seconds += time.perf_counter() - t
        self.n += len(pts_W)
        col = np.full((len(s), 3), 0.5, np.float32) if want_color else None
        return SimpleNamespace(sdf=s.astype(np.float32), gradient=None, occupancy=np.zeros(len(s), np.float32),
                               color=col)


def observed_by_projection(pts: np.ndarray, frames, res: float) -> np.ndarray:
    """(N,) bool: some frame's depth ray reached the cell of this centre (in view, in front of
    or at the measured surface within half the cell's diagonal). Independent of Coverage."""
    seen = np.zeros(len(pts), bool)
    for f in frames:
        T_CW = np.linalg.inv(f.T_WC)
        pc = pts @ T_CW[:3, :3].T + T_CW[:3, 3]
        z = pc[:, 2]
        ok = z > 0.05
        u = np.full(len(z), -1)
        v = np.full(len(z), -1)
        u[ok] = np.round(f.K[0, 0] * pc[ok, 0] / z[ok] + f.K[0, 2]).astype(int)
        v[ok] = np.round(f.K[1, 1] * pc[ok, 1] / z[ok] + f.K[1, 2]).astype(int)
        ok &= (u >= 0) & (u < f.width) & (v >= 0) & (v < f.height)
        idx = np.flatnonzero(ok)
        d = f.depth_m[v[idx], u[idx]]
        hit = (d > 0) & (z[idx] <= d + 0.5 * np.sqrt(3.0) * res)
        seen[idx[hit]] = True
    return seen


# ----------------------------------------------------------------------------- parts


def bench_occupancy(mapper, frames, res=0.05, z_min=0.1, z_max=1.5) -> dict:
    sl = P.occupancy_slice_2d(mapper, z_min, z_max, res)
    H, W = sl.data.shape
    ys, xs = np.mgrid[0:H, 0:W]
    cx = sl.origin_xy[0] + (xs.ravel() + 0.5) * res
    cy = sl.origin_xy[1] + (ys.ravel() + 0.5) * res
    zs = band_heights(z_min, z_max, res)
    # ground truth per column: occupied if a solid part touches a sample cell (sdf <= res/2 at
    # its centre); observed if the sensor reached some sample cell of the column
    gt_occ = np.zeros(H * W, bool)
    inside_any = np.zeros(H * W, bool)
    never = np.ones(H * W, bool)
    for z in zs:
        pts = np.column_stack([cx, cy, np.full(H * W, z)])
        s = scene_sdf(pts)
        gt_occ |= s <= 0.5 * res + 1e-6  # the solid touches the cell's column
        inside_any |= s < 0
        never &= ~observed_by_projection(pts, frames, res)
    d = sl.data.ravel()
    ours_occ = d == P.OCCUPIED_CELL
    iou = (ours_occ & gt_occ).sum() / max(1, (ours_occ | gt_occ).sum())
    obs = ~never
    iou_obs = (ours_occ & gt_occ & obs).sum() / max(1, ((ours_occ | gt_occ) & obs).sum())
    free_inside = int(((d == P.FREE_CELL) & inside_any).sum())
    unknown_never = float((d[never] == P.UNKNOWN_CELL).mean()) if never.any() else float("nan")
    # 3D: voxels inside the bounds never observed (projection test) must be unknown
    g = P.occupancy_grid_3d(mapper, res)
    c = g.centers()
    never3 = ~observed_by_projection(c, frames, res)
    unk3 = float((g.data.ravel()[never3] == P.UNKNOWN_CELL).mean())
    occ3 = g.data.ravel() == P.OCCUPIED_CELL
    free3_inside = int(((g.data.ravel() == P.FREE_CELL) & (scene_sdf(c) < -0.5 * res)).sum())
    return {
        "slice_cells": int(H * W), "resolution_m": res, "z_band": [z_min, z_max],
        "iou_occupied_all": float(iou), "iou_occupied_observed_columns": float(iou_obs),
        "occupied_precision": float((ours_occ & gt_occ).sum() / max(1, ours_occ.sum())),
        "free_cells_inside_objects": free_inside,
        "never_observed_cells_unknown_2d": unknown_never, "never_observed_cells_2d": int(never.sum()),
        "never_observed_voxels_unknown_3d": unk3, "never_observed_voxels_3d": int(never3.sum()),
        "free_voxels_deeper_than_half_a_voxel_inside_objects_3d": free3_inside,
        "occupied_voxels_3d": int(occ3.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, nargs=2, default=(320, 240))
    ap.add_argument("--train-seconds", type=float, default=60.0)
    ap.add_argument("--query-points", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="small run (a smoke test of this script)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.frames, args.size, args.train_seconds, args.query_points = 20, (160, 120), 5.0, 100_000
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores_used": torch.get_num_threads(),
                             "load_avg": os.getloadavg(), "torch": torch.__version__,
                             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    W, H = args.size
    seq = synthetic_sequence(n_frames=args.frames, width=W, height=H)
    cfg = preset("cpu")

    # ---- 1a. extractor on the exact SDF
    cov = Coverage(cfg.occupancy.resolution_m)
    for f in seq.frames:
        cov.update(f, cfg.render.max_depth_m)
    lo, hi = cov.bounds()
    am = AnalyticMap(cfg, cov, (lo - cfg.field.margin_m, hi + cfg.field.margin_m))
    ex = P.MeshExtractor(am, voxel_m=0.02, color=False)
    P.MeshExtractor(am, voxel_m=0.2, color=False).extract_arrays()  # warm imports
    am.seconds, am.n = 0.0, 0
    t = time.perf_counter()
    v, f_, _ = ex.extract_arrays()
    total = time.perf_counter() - t
    dense = int(np.prod(np.ceil((am._b[1] - am._b[0]) / 0.02) + 1))
    out["mesh_analytic_2cm"] = {
        "seconds_total": total, "seconds_outside_field": total - am.seconds, "field_queries": am.n,
        "dense_grid_points": dense, "query_fraction_of_dense": am.n / dense, "triangles": int(len(f_)),
        "max_abs_sdf_at_vertices_m": float(np.abs(scene_sdf(v)).max()) if len(v) else None,
    }
    t = time.perf_counter()
    ex.extract_arrays()
    out["mesh_analytic_2cm"]["seconds_reextract_unchanged"] = time.perf_counter() - t
    print("mesh (exact SDF):", json.dumps(out["mesh_analytic_2cm"], indent=1), flush=True)
    out["occupancy_exact_sdf"] = bench_occupancy(am, seq.frames)
    print("occupancy (exact SDF, real coverage):", json.dumps(out["occupancy_exact_sdf"], indent=1), flush=True)

    # ---- 1b/2/3 on a learned map
    m = Mapper(cfg)
    for f in seq.frames:
        m.add_frame(f)
    t = time.perf_counter()
    steps = m.train_for(args.train_seconds)
    out["training"] = {"frames": len(seq.frames), "size": [W, H], "steps": steps,
                       "seconds": time.perf_counter() - t, "last_loss": m.stats.last_loss}
    print("training:", out["training"], flush=True)

    pts = np.random.default_rng(0).uniform(am._b[0], am._b[1], size=(args.query_points, 3)).astype(np.float32)
    r = {}
    threads = torch.get_num_threads()
    for name, grad in (("sdf", False), ("sdf_gradient", True)):
        for nt in sorted({threads, 1}, reverse=True):  # the bench's threads, then 1 (least disturbed)
            torch.set_num_threads(nt)
            P.query_field(m, pts[:10_000], want_gradient=grad)
            c0, t = time.process_time(), time.perf_counter()
            P.query_field(m, pts, want_gradient=grad)
            dt, dc = time.perf_counter() - t, time.process_time() - c0
            sfx = "" if nt == threads else f"_{nt}thread"
            r[f"{name}_points_per_s{sfx}"] = args.query_points / dt
            r[f"{name}_points_per_cpu_s{sfx}"] = args.query_points / dc
    torch.set_num_threads(threads)
    out["query"] = r
    print("query:", r, flush=True)

    ex = P.MeshExtractor(m, voxel_m=0.02)
    t = time.perf_counter()
    mesh = ex.extract(full=True)
    dt = time.perf_counter() - t
    met = mesh_metrics(mesh, seq.mesh, n_points=100_000, frames=seq.frames[:: max(1, len(seq.frames) // 30)])
    out["mesh_learned_2cm"] = {"seconds": dt, "field_queries": ex.stats.points_queried,
                               "triangles": ex.stats.triangles, "fragments_removed": ex.stats.components_removed,
                               **{k: met.to_dict()[k] for k in ("chamfer_l1_cm", "fscore_2cm", "fscore_5cm",
                                                                 "accuracy_cm", "completion_cm")}}
    t = time.perf_counter()
    ex.extract()
    out["mesh_learned_2cm"]["seconds_reextract_unchanged"] = time.perf_counter() - t
    # the same map with and without vertex colours, alternating (colours: one sdf + gradient +
    # colour-head query per vertex); wall and process CPU seconds, best of 2 each
    for rep in range(2):
        for color in (False, True):
            exc = P.MeshExtractor(m, voxel_m=0.02, color=color)
            c0, t = time.process_time(), time.perf_counter()
            exc.extract_arrays(full=True)
            dt, dc = time.perf_counter() - t, time.process_time() - c0
            key = "mesh_learned_2cm_" + ("with" if color else "without") + "_colors"
            prev = out.get(key, {"seconds": float("inf"), "cpu_seconds": float("inf")})
            out[key] = {"seconds": min(dt, prev["seconds"]), "cpu_seconds": min(dc, prev["cpu_seconds"]),
                        "field_queries": exc.stats.points_queried, "triangles": exc.stats.triangles}
    print("mesh (learned):", json.dumps(out["mesh_learned_2cm"], indent=1), flush=True)
    print("mesh (learned) without / with colours:", json.dumps({k: out[k] for k in (
        "mesh_learned_2cm_without_colors", "mesh_learned_2cm_with_colors")}, indent=1), flush=True)

    t = time.perf_counter()
    out["occupancy_learned"] = bench_occupancy(m, seq.frames)
    out["occupancy_learned"]["seconds"] = time.perf_counter() - t
    print("occupancy (learned):", json.dumps(out["occupancy_learned"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
