"""Site size against resident memory, accuracy and time: one field vs submaps (issue 16 item 5).

The synthetic floor (neural_mapping/io/floor_scene.py: 40 x 20 m, a corridor and ten rooms) is
walked; each site size is a prefix of the walk (``--fractions`` of its ``--frames`` frames: the
first rooms, then more of the floor). For each size and each mode (``one``: one field, ``submaps``:
``submaps.enabled``) a fresh worker process maps the prefix offline (each frame then
``--steps-per-frame`` steps, as ``neural-mapping map``), meshes the map and reports:

- ``rss_mb``: the worker's resident memory after mapping (VmRSS) and its peak (VmHWM), so the
  figures of one run are not mixed with another's; ``map_mb``: what the map says it holds
  (submaps: ``SubmapMap.resident_bytes``; one field: its tensors and coverage);
- ``F@5cm`` (and F@2cm, accuracy, completion) of the mesh against the GT mesh restricted to
  what the prefix's frames saw within ``render.max_depth_m`` (visibility from every
  ``--vis-stride``-th frame);
- ``map_s`` (mapping wall time) and ``mesh_s``; ``submaps`` and ``spills`` for submaps;
- ``double_border``: area fraction of the mesh within the blend zone of submap borders with a
  second sheet within 2 cm (neural_mapping/submaps/seams.py; also computed for one field, on the
  same zones, as the reference).

Targets (issue 16): submaps' resident memory after the whole walk within 1.25x of that after
the first room; F@5cm over the whole site >= 0.9 and no worse than one field's on the first room;
double sheets at borders < 1 %.

Usage (the lead's full run, on a quiet machine; ~hours on 2 cores):
  .venv/bin/python benchmarks/bench_scale.py --frames 4000 --fractions 0.08 0.25 0.5 1.0 \\
      --modes one submaps --json benchmarks/scale.json
Smoke run (a minute or two):
  nice .venv/bin/python benchmarks/bench_scale.py --frames 120 --fractions 0.1 0.2 --size 64 48 \\
      --gt-points 20000 --mesh-voxel 0.08
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _proc_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _map_mb(m) -> float:
    if hasattr(m, "resident_bytes"):
        return m.resident_bytes() / 1e6
    from neural_mapping.submaps.submap import mapper_nbytes

    return mapper_nbytes(m) / 1e6


def worker(a) -> dict:
    """One (mode, fraction) run in this process; returns its figures."""
    import torch

    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.evaluation import mesh_metrics, sample_surface, visible_mask
    from neural_mapping.io.floor_scene import floor_frames, floor_mesh
    from neural_mapping.products import MeshExtractor
    from neural_mapping.runner import new_map
    from neural_mapping.submaps.grid import SubmapGrid
    from neural_mapping.submaps.seams import border_zone, double_sheet_fraction

    if a.threads:
        torch.set_num_threads(a.threads)
    over = {"train.steps_per_frame": a.steps_per_frame}
    if a.mode == "submaps":
        over.update({"submaps.enabled": True, "submaps.size_m": a.size_m, "submaps.overlap_m": a.overlap_m,
                     "submaps.max_resident_mb": a.max_resident_mb})
    cfg = apply_overrides(preset(a.preset), over)
    gt_mesh = floor_mesh()
    n = max(2, int(round(a.frames * a.fraction)))
    W, H = a.size
    m = new_map(cfg)
    vis_frames = []
    t0 = time.perf_counter()
    for i, f in enumerate(floor_frames(a.frames, W, H, sensor=a.sensor, mesh=gt_mesh)):
        if i >= n:
            break
        m.add_frame(f)
        m.step(cfg.train.steps_per_frame)
        if i % a.vis_stride == 0:
            vis_frames.append(f)
    map_s = time.perf_counter() - t0
    rss, hwm, map_mb = _proc_mb("VmRSS"), _proc_mb("VmHWM"), _map_mb(m)
    t0 = time.perf_counter()
    mesh = MeshExtractor(m, voxel_m=a.mesh_voxel, color=False).extract(full=True)
    mesh_s = time.perf_counter() - t0
    # GT surface seen by the prefix's frames within the depth the map uses (render.max_depth_m)
    pts = sample_surface(gt_mesh, a.gt_points)
    vis = visible_mask(pts, gt_mesh, vis_frames, max_depth_m=cfg.render.max_depth_m)
    mm = mesh_metrics(mesh, gt_mesh, a.gt_points, gt=(pts[vis], float(vis.mean())))
    grid = SubmapGrid(a.size_m, a.overlap_m, 0.8)
    dbl = double_sheet_fraction(np.asarray(mesh.vertices), np.asarray(mesh.triangles), where=border_zone(grid))
    out = {"mode": a.mode, "fraction": a.fraction, "frames": n, "map_s": map_s, "mesh_s": mesh_s,
           "rss_mb": rss, "peak_rss_mb": hwm, "map_mb": map_mb, "fscore_5cm": mm.fscore_5cm,
           "fscore_2cm": mm.fscore_2cm, "accuracy_cm": mm.accuracy_cm, "completion_cm": mm.completion_cm,
           "gt_visible": mm.gt_visible_fraction, "triangles": len(mesh.triangles), "double_border": dbl,
           "steps": int(m.stats.steps)}
    if a.mode == "submaps":
        out.update(submaps=len(m.submaps()), spills=m.cache.spills, reloads=m.cache.reloads)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=4000, help="frames of the whole walk (default 4000)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.08, 0.25, 0.5, 1.0],
                   help="site sizes: fractions of the walk mapped (default 0.08 (the first room) 0.25 0.5 1.0)")
    p.add_argument("--modes", nargs="+", choices=("one", "submaps"), default=["one", "submaps"])
    p.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"), help="image size")
    p.add_argument("--sensor", choices=("clean", "kinect", "realsense"), default="kinect")
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--steps-per-frame", type=int, default=2)
    p.add_argument("--size-m", type=float, default=8.0, help="submaps.size_m")
    p.add_argument("--overlap-m", type=float, default=1.0, help="submaps.overlap_m")
    p.add_argument("--max-resident-mb", type=float, default=512.0, help="submaps.max_resident_mb")
    p.add_argument("--mesh-voxel", type=float, default=0.04)
    p.add_argument("--gt-points", type=int, default=200_000)
    p.add_argument("--vis-stride", type=int, default=10, help="GT visibility from every n-th frame")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--worker", nargs=2, metavar=("MODE", "FRACTION"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        a.mode, a.fraction = a.worker[0], float(a.worker[1])
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return 0
    passthrough = [x for x in (argv if argv is not None else sys.argv[1:])]
    rows = []
    print(f"{'mode':8s} {'frac':>5s} {'frames':>6s} {'map s':>7s} {'RSS MB':>7s} {'peak':>7s} {'map MB':>7s} "
          f"{'F@5cm':>6s} {'F@2cm':>6s} {'acc cm':>6s} {'comp cm':>7s} {'dbl%':>5s} {'subs':>4s} {'spill':>5s}")
    for frac in a.fractions:
        for mode in a.modes:
            cmd = [sys.executable, os.path.abspath(__file__), *_strip(passthrough), "--worker", mode, str(frac)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                print(f"{mode} {frac}: worker failed (rc {r.returncode}):\n{r.stderr[-2000:]}", file=sys.stderr)
                return 1
            row = json.loads(line[-1][7:])
            rows.append(row)
            print(f"{mode:8s} {frac:5.2f} {row['frames']:6d} {row['map_s']:7.1f} {row['rss_mb']:7.0f} "
                  f"{row['peak_rss_mb']:7.0f} {row['map_mb']:7.1f} {row['fscore_5cm']:6.3f} {row['fscore_2cm']:6.3f} "
                  f"{row['accuracy_cm']:6.2f} {row['completion_cm']:7.2f} {100 * row['double_border']:5.2f} "
                  f"{row.get('submaps', '-')!s:>4s} {row.get('spills', '-')!s:>5s}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1, default=str) + "\n")
    return 0


def _strip(argv: list[str]) -> list[str]:
    """The options without --fractions/--modes/--json (the worker gets its own)."""
    out, skip = [], False
    for x in argv:
        if x in ("--fractions", "--modes", "--json"):
            skip = True
            continue
        if skip and not x.startswith("--"):
            continue
        skip = False
        out.append(x)
    return out


if __name__ == "__main__":
    sys.exit(main())
