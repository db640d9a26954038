"""Training benchmarks of the neural map (prints figures; no assertions).

  sdf     SDF, cpu preset, --realtime over a 300-frame 320x240 synthetic sequence (30 Hz) plus
          --extra-seconds 20; mesh vs the ground truth restricted to surfaces the frames saw
          (targets: F-score@5cm >= 0.90, Chamfer-L1 <= 3 cm)
  nerf    the same data with a NeRF field, every 50th frame held out (6 frames) (targets: PSNR >= 25 dB,
          depth L1 <= 5 cm)
  sun3d   ../shared/data/sun3d_frag2, every 5th frame held out, cpu preset
          (target: held-out depth L1 <= 4 cm in under 2 minutes); --error-maps DIR writes the
          held-out signed depth error maps and prints error percentiles
Each prints throughput (rays/s, sample points/s). Usage:
  python benchmarks/bench_training.py [sdf|nerf|sun3d ...] [--frames N] [--size W H] [--extra S]
      [--device cpu|cuda] [--preset cpu|gpu] [--set key=value ...] [--json OUT] [--error-maps DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neural_mapping.config import apply_overrides, preset  # noqa: E402
from neural_mapping.runner import RunOptions, run_mapping  # noqa: E402


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {dev}"


def make_cfg(args, field: str, extra: dict | None = None):
    cfg = preset(args.preset)
    over = {"field.kind": field}
    if args.device:
        over["device"] = args.device
    over.update(extra or {})
    for kv in args.set:
        k, v = kv.split("=", 1)
        over[k] = yaml.safe_load(v)
    return apply_overrides(cfg, over)


def report(name: str, res, extra: dict) -> dict:
    m = res.metrics
    out = {"bench": name, "frames": m.frames_added, "dropped": m.frames_dropped, "held_out": m.frames_held_out,
           "keyframes": m.keyframes,
           "steps": m.steps, "wall_s": round(m.wall_s, 2), "rays_per_s": round(m.rays_per_s),
           "samples_per_s": round(m.samples_per_s), "device": m.device}
    if m.frames_held_out:
        out.update(held_out_depth_l1_cm=round(100 * m.held_out_depth_l1_m, 2), held_out_psnr_db=round(m.held_out_psnr_db, 2),
                   held_out_hit=round(m.held_out_hit_ratio, 3))
    out.update(extra)
    print(json.dumps(out), flush=True)
    return out


def bench_synthetic(args, field: str) -> dict:
    from neural_mapping.evaluation import mesh_metrics
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.products import extract_mesh

    w, h = args.size
    seq = synthetic_sequence(n_frames=args.frames, width=w, height=h, seed=0)
    cfg = make_cfg(args, field)
    opts = RunOptions(realtime=True, rate_hz=30.0, extra_seconds=args.extra,
                      exclude_every=50 if field == "nerf" else 0, progress=False)
    res = run_mapping(seq.frames, cfg, opts, total=len(seq.frames))
    extra = {}
    if field == "sdf":
        t = time.perf_counter()
        mesh = extract_mesh(res.mapper)
        mesh_s = time.perf_counter() - t
        mm = mesh_metrics(mesh, seq.mesh, n_points=100_000, frames=seq.frames[::10])
        extra = {"fscore_5cm": round(mm.fscore_5cm, 4), "fscore_2cm": round(mm.fscore_2cm, 4),
                 "chamfer_l1_cm": round(mm.chamfer_l1_cm, 3), "accuracy_cm": round(mm.accuracy_cm, 3),
                 "completion_cm": round(mm.completion_cm, 3), "mesh_s": round(mesh_s, 1),
                 "gt_visible": round(mm.gt_visible_fraction, 3)}
    return report(f"{field} synthetic {args.frames}x{w}x{h} realtime+{args.extra:g}s", res, extra)


def bench_sun3d(args) -> dict:
    from neural_mapping.io.sources import open_source

    path = REPO.parent / "shared" / "data" / "sun3d_frag2"
    if not path.is_dir():
        print(f"skip sun3d: {path} is absent")
        return {}
    src = open_source(path)
    frames = list(src)
    cfg = make_cfg(args, "sdf")
    t = time.perf_counter()
    res = run_mapping(frames, cfg, RunOptions(exclude_every=5, extra_seconds=args.sun3d_extra, progress=False),
                      total=len(frames))
    extra = {"total_s": round(time.perf_counter() - t, 1)}
    if args.error_maps:
        extra.update(error_maps(res, Path(args.error_maps)))
    return report("sdf sun3d_frag2 every 5th held out", res, extra)


def error_maps(res, out_dir: Path) -> dict:
    """Render the held-out frames again (as the runner does), write one PNG per frame (sensor depth |
    rendered depth | signed error: red = rendered in front of the sensor, blue = behind, full colour
    at 30 cm, green = no hit, grey = no sensor depth) and return error percentiles over all pixels."""
    from PIL import Image

    from neural_mapping.camera import stride_intrinsics
    from neural_mapping.runner import eval_stride

    out_dir.mkdir(parents=True, exist_ok=True)
    errs = []
    for i, f in res.held_out_frames:
        s = eval_stride(f)
        K = stride_intrinsics(f.K, s)
        gt = f.depth_m[::s, ::s]
        r = res.mapper.render(f.T_WC, K, *gt.shape)
        ok = (gt > 0) & (r.depth > 0)
        e = np.where(ok, r.depth - gt, 0.0)
        errs.append(e[ok])
        v = np.clip(e / 0.3, -1, 1)
        err_rgb = np.stack([255 * np.clip(-v, 0, 1), np.zeros_like(v), 255 * np.clip(v, 0, 1)], -1).astype(np.uint8)
        err_rgb[gt <= 0] = 60
        err_rgb[(gt > 0) & (r.depth <= 0)] = (0, 255, 0)
        gray = [np.repeat((np.clip(x / 6.0, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1) for x in (gt, r.depth)]
        Image.fromarray(np.concatenate(gray + [err_rgb], 1)).save(out_dir / f"held_out_{i:03d}.png")
    e = np.concatenate(errs)
    p50, p90, p95, p99 = (float(x) for x in np.percentile(np.abs(e), [50, 90, 95, 99]) * 100)
    return {"err_cm_p50": round(p50, 2), "err_cm_p90": round(p90, 2), "err_cm_p95": round(p95, 2),
            "err_cm_p99": round(p99, 2), "err_cm_signed_mean": round(100 * float(e.mean()), 2),
            "err_frac_over_10cm": round(float((np.abs(e) > 0.1).mean()), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("benches", nargs="*", default=["sdf", "nerf", "sun3d"])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, nargs=2, default=(320, 240))
    ap.add_argument("--extra", type=float, default=20.0, help="seconds of training after the last frame")
    ap.add_argument("--sun3d-extra", type=float, default=30.0, help="sun3d: seconds of training after the frames")
    ap.add_argument("--error-maps", default=None, metavar="DIR",
                    help="sun3d: write held-out depth error maps (PNG) here and print error percentiles")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"machine: {machine()}", flush=True)
    results = []
    for b in args.benches:
        if b in ("sdf", "nerf"):
            results.append(bench_synthetic(args, b))
        elif b == "sun3d":
            results.append(bench_sun3d(args))
        else:
            ap.error(f"unknown benchmark {b!r}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
