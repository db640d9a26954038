"""`neural-mapping bench`: the neural map against classical TSDF fusion on the same frames, in one process.

Ours trains with ``map --realtime`` (frames fed at the input's pace into the online core, training
in between), then ``seconds`` more, evaluated at a few points of that extra training (the error
curve). Open3D TSDF fusion (:mod:`neural_mapping.tsdf_baseline`) at each voxel size integrates every
training frame. One row per method: with a GT mesh, Chamfer-L1, F@2cm, F@5cm and completion ratio
(GT points restricted to what the training frames saw) and the distance errors of iSDF's protocol
(points in observed free space, binned by true distance; the TSDF's ESDF is the Euclidean distance
transform of its occupied voxels); with held-out frames (``exclude_every``), depth L1 and PSNR;
always the frames used, the wall time, the map memory (ours: the map file) and the mesh time.
Ratios are ours / the TSDF row's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neural_mapping import evaluation as ev
from neural_mapping.config import MapperConfig
from neural_mapping.frame import Frame
from neural_mapping.tsdf_baseline import TsdfFusion

log = logging.getLogger(__name__)

#: metrics in the table: key, label, format, ratio direction (+1: higher is better, -1: lower)
COLUMNS = (
    ("chamfer_l1_cm", "Chamfer-L1 (cm)", "{:.2f}", -1), ("fscore_2cm", "F@2cm", "{:.1%}", 1),
    ("fscore_5cm", "F@5cm", "{:.1%}", 1), ("completion_ratio_5cm", "completion ratio @5cm", "{:.1%}", 1),
    ("held_out_depth_l1_cm", "held-out depth L1 (cm)", "{:.2f}", -1), ("held_out_psnr_db", "held-out PSNR (dB)", "{:.2f}", 1),
    ("frames_used", "frames used", "{:d}", 1), ("wall_s", "wall time (s)", "{:.1f}", -1),
    ("memory_mb", "map memory (MB)", "{:.1f}", -1), ("mesh_s", "mesh time (s)", "{:.2f}", -1),
)


@dataclass
class BenchOptions:
    exclude_every: int = 0  # hold out frames 0, N, 2N, ...
    seconds: float = 20.0  # our training after the last frame
    rate_hz: float | None = None  # feed rate; None: the frames' stamps
    tsdf_voxels: tuple = (0.02, 0.04)
    curve_points: int = 5  # evaluations of ours during the extra training
    curve_views: int = 2  # held-out views rendered per evaluation of the curve
    n_gt_points: int = 100_000
    n_free_points: int = 20_000
    queue_size: int = 16  # as runner.RunOptions
    frames_per_step: int = 16
    progress: bool = True
    plots: bool = False


def _curve_metric(query_fn, render_fn, held, gt_pts, views: int = 4) -> float:
    """The error-curve metric: held-out depth L1 (cm) over up to ``views`` views, else mean |distance|
    (cm) from GT surface points to the surface."""
    if held:
        vals = [render_fn(f) for _, f in held[:: max(1, len(held) // views)][:views]]
        return float(100 * np.nanmean(vals))
    if gt_pts is not None:
        return float(100 * np.mean(np.abs(query_fn(gt_pts))))
    return float("nan")


def _held_out_depth(render, f: Frame, s: int):
    """(depth L1 m, PSNR dB, depth error image, colour) of a render function at a held-out frame (stride s)."""
    from neural_mapping.camera import stride_intrinsics

    gt_d = f.depth_m[::s, ::s]
    gt_c = f.rgb[::s, ::s].astype(np.float32) / 255.0
    col, dep = render(f.T_WC, stride_intrinsics(f.K, s), *gt_d.shape)
    valid = gt_d > 0
    err = np.where(valid & (dep > 0), np.abs(dep - gt_d), np.nan)
    return ev.depth_l1(dep, gt_d), ev.psnr(col[valid], gt_c[valid]) if valid.any() else float("nan"), err, col


def run_bench(frames: list[Frame], cfg: MapperConfig, out_dir: str | Path, gt_mesh=None,
              opts: BenchOptions | None = None, *, return_run: bool = False):
    """Run ours and the TSDF rows on ``frames``; writes DIR/bench.json (and PNGs) and returns its dict
    (with ``return_run``: the dict and our :class:`~neural_mapping.runner.RunResult`, whose mapper is
    the benchmarked map after its extra training)."""
    from tqdm import tqdm

    from neural_mapping.io.outputs import write_mesh_verified
    from neural_mapping.mapfile import save_map
    from neural_mapping.products import MeshExtractor, save_mesh
    from neural_mapping.runner import RunOptions, eval_stride, run_mapping

    o = opts or BenchOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held = [(i, f) for i, f in enumerate(frames) if o.exclude_every and i % o.exclude_every == 0]
    train = [f for i, f in enumerate(frames) if not (o.exclude_every and i % o.exclude_every == 0)]
    gt = gt_curve = None
    if gt_mesh is not None:
        gt = ev.gt_points(gt_mesh, o.n_gt_points, frames=train[:: max(1, len(train) // 60)])
        gt_curve = gt[0][:: max(1, len(gt[0]) // 5000)]

    # ---- ours, in real time, then the extra training with the error curve
    res = run_mapping(frames, cfg, RunOptions(realtime=True, rate_hz=o.rate_hz, exclude_every=o.exclude_every,
                                              queue_size=o.queue_size, frames_per_step=o.frames_per_step,
                                              progress=o.progress, evaluate_held_out=False), total=len(frames))
    mapper = res.mapper

    def our_render(T, K, H, W):
        r = mapper.render(T, K, H, W)
        return r.color, r.depth

    def our_l1(f):
        return _held_out_depth(our_render, f, eval_stride(f))[0]

    curve = [(mapper.stats.train_seconds,
              _curve_metric(lambda p: mapper.query(p).sdf, our_l1, held, gt_curve, o.curve_views))]
    wall = res.metrics.wall_s  # frames fed in real time + drained; the curve's evaluations are not counted
    for _ in tqdm(range(o.curve_points), desc="ours: training", disable=not o.progress, leave=False):
        t = time.perf_counter()
        mapper.train_for(o.seconds / max(1, o.curve_points))
        wall += time.perf_counter() - t
        curve.append((mapper.stats.train_seconds,
                      _curve_metric(lambda p: mapper.query(p).sdf, our_l1, held, gt_curve, o.curve_views)))
    t = time.perf_counter()
    our_mesh = MeshExtractor(mapper).extract(full=True)
    mesh_s = time.perf_counter() - t
    write_mesh_verified(our_mesh, out / "mesh.ply")
    map_path = save_map(mapper, out / "map.pt")
    m = res.metrics
    rows = {"ours": {"frames_used": int(mapper.stats.frames_added), "frames_dropped": int(m.frames_dropped),
                     "wall_s": wall, "memory_mb": map_path.stat().st_size / 2 ** 20, "mesh_s": mesh_s,
                     "steps": int(mapper.stats.steps), "keyframes": len(mapper.keyframes)}}
    meshes, renders = {"ours": our_mesh}, {"ours": our_render}

    # ---- TSDF fusion of the same training frames
    fusions = {}
    for v in o.tsdf_voxels:
        name = f"tsdf_{round(v * 100)}cm"
        fu = TsdfFusion(v, max_depth_m=cfg.render.max_depth_m)
        for f in tqdm(train, desc=f"TSDF {v * 100:.0f} cm", disable=not o.progress, leave=False):
            fu.integrate(f)
        t = time.perf_counter()
        meshes[name] = fu.mesh()
        mesh_s = time.perf_counter() - t
        save_mesh(meshes[name], out / f"{name}.ply")
        rows[name] = {"frames_used": fu.frames, "wall_s": fu.integrate_s + mesh_s, "memory_mb": fu.memory_mb,
                      "mesh_s": mesh_s, "integrate_ms_per_frame": 1000 * fu.integrate_s / max(1, fu.frames)}
        fusions[name] = fu
        renders[name] = fu.render

    # ---- accuracy against the GT mesh, distances in free space
    distances = {}
    if gt is not None:
        for name, msh in tqdm(meshes.items(), desc="mesh metrics", disable=not o.progress, leave=False):
            mm = ev.mesh_metrics(msh, gt_mesh, gt=gt)
            rows[name].update(mm.to_dict())
        pts = ev.free_space_points(train, o.n_free_points, max_depth_m=cfg.render.max_depth_m)
        true_d, true_g = ev.distance_and_gradient(pts, gt_mesh)
        q = mapper.query(pts, want_gradient=True)
        distances["ours"] = ev.distance_errors(true_d, true_g, q.sdf.astype(np.float64), q.gradient.astype(np.float64))
        for name, fu in fusions.items():
            distances[name] = ev.distance_errors(true_d, true_g, *fu.esdf(pts))
        for name, bins in distances.items():
            rows[name]["distance_errors"] = bins

    # ---- held-out views
    err_images = {}
    if held:
        for name, render in renders.items():
            l1, ps, errs, cols = [], [], [], []
            for _, f in tqdm(held, desc=f"held out: {name}", disable=not o.progress, leave=False):
                a, b, e, c = _held_out_depth(render, f, eval_stride(f))
                l1.append(a)
                ps.append(b)
                errs.append(e)
                cols.append(c if name == "ours" else None)
            if name == "ours":
                err_images["_our_colour"] = cols
            rows[name]["held_out_depth_l1_cm"] = 100 * float(np.nanmean(l1)) if np.isfinite(l1).any() else float("nan")
            rows[name]["held_out_psnr_db"] = float(np.nanmean(ps)) if np.isfinite(ps).any() else float("nan")
            err_images[name] = errs

    # ---- TSDF levels of the curve metric
    levels = {}
    for name, fu in fusions.items():
        def tsdf_l1(f, fu=fu):
            return _held_out_depth(fu.render, f, eval_stride(f))[0]
        levels[name] = _curve_metric(lambda p, fu=fu: ev.distance_to_mesh(p, fu.mesh()), tsdf_l1, held, gt_curve,
                                     o.curve_views)

    result = {"rows": rows, "ratios": ratios(rows), "curve": {"metric": curve_metric_name(held, gt_curve),
                                                               "ours": curve, "tsdf_levels": levels},
              "input_frames": len(frames), "training_frames": len(train), "held_out_frames": len(held),
              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(o).items()}}
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    if o.plots:
        from neural_mapping.bench_plots import write_plots

        result["plots"] = write_plots(out, result, mapper, held, err_images)
        (out / "bench.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    if return_run:
        m.steps, m.keyframes = int(mapper.stats.steps), len(mapper.keyframes)
        return result, res
    return result


def curve_metric_name(held, gt_curve) -> str:
    if held:
        return "held-out depth L1 (cm)"
    return "mean distance from GT surface points to the surface (cm)" if gt_curve is not None else "none"


def ratios(rows: dict) -> dict:
    """ours / each TSDF row, per numeric metric of the table."""
    ours = rows["ours"]
    out = {}
    for name, r in rows.items():
        if name == "ours":
            continue
        out[name] = {k: (ours[k] / r[k] if k in ours and k in r and r[k] else float("nan"))
                     for k, *_ in COLUMNS}
    return out


def table(result: dict) -> str:
    """The bench table as Markdown: one row per method, then our ratios, then the distance errors."""
    rows = result["rows"]
    names = list(rows)
    lines = ["| metric | " + " | ".join(names) + " | " + " | ".join(f"ours / {n}" for n in names[1:]) + " |",
             "|---" * (1 + 2 * len(names) - 1) + "|"]
    for key, label, fmt, _ in COLUMNS:
        if not any(key in r for r in rows.values()):
            continue
        cells = []
        for n in names:
            v = rows[n].get(key)
            cells.append("-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v))
        rat = [result["ratios"][n].get(key, float("nan")) for n in names[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(f"{x:.2f}" for x in rat) + " |")
    if any("distance_errors" in r for r in rows.values()):
        lines.append("")
        lines.append("| distance error: mean abs (cm) / gradient 1-cos | " + " | ".join(names) + " |")
        lines.append("|---" * (1 + len(names)) + "|")
        for i, (lo, hi) in enumerate(ev.DISTANCE_BINS):
            cells = []
            for n in names:
                b = rows[n]["distance_errors"][i]
                cells.append(f"{b['mean_abs_cm']:.2f} / {b['grad_cos_err']:.3f} (n={b['n']})")
            lines.append(f"| true distance {lo}-{hi} m | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["BenchOptions", "run_bench", "table", "ratios", "COLUMNS"]
