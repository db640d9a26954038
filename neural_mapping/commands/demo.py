"""`neural-mapping demo`: the README's first command, end to end on the built-in synthetic room.

1. synthesise a room sequence (Kinect-like depth noise and dropouts by default) with its
   ground-truth mesh and write it as a rosbag2 bag;
2. map the bag in real time (frames fed at their recorded pace, training in between, then
   ``--extra-seconds`` more) with the preset that fits the machine, and fuse the same frames into
   an Open3D TSDF at 4 cm, the classical baseline (:mod:`neural_mapping.benchmark`, as
   ``neural-mapping bench`` does);
3. write the map, mesh, three rendered views, metrics against the ground truth, the comparison
   table (bench.json) and PNGs (error curve, held-out views with both methods' depth errors,
   occupancy) to ``--out`` and print both tables with the paths.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from neural_mapping.errors import InputError


def add_arguments(p) -> None:
    p.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    p.add_argument("--frames", type=int, default=300, help="synthetic frames at 30 Hz (default: 300, 10 s)")
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"),
                   help="image size (default: 320 240)")
    p.add_argument("--sensor", choices=("clean", "kinect", "realsense"), default="kinect",
                   help="depth sensor model of the synthetic frames (default: kinect)")
    p.add_argument("--extra-seconds", type=float, default=20.0, help="training after the last frame (default: 20)")
    p.add_argument("--field", choices=("sdf", "nerf"), default="sdf", help="field kind (default: sdf)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="compute device")
    p.add_argument("--seed", type=int, default=0, help="scene and trajectory seed")


def run(args) -> int:
    import open3d as o3d
    import torch

    from neural_mapping.benchmark import BenchOptions, run_bench, table
    from neural_mapping.commands.render import save_render
    from neural_mapping.config import apply_overrides, preset, save_yaml
    from neural_mapping.evaluation import MeshMetrics
    from neural_mapping.io.bag import write_bag
    from neural_mapping.io.sources import open_source
    from neural_mapping.io.synthetic import synthetic_sequence

    if args.frames < 10:
        raise InputError(f"--frames must be at least 10, got {args.frames}")
    if args.extra_seconds < 0:
        raise InputError(f"--extra-seconds must be >= 0, got {args.extra_seconds}")
    W, H = args.size
    if not (16 <= W <= 1280 and 16 <= H <= 960):
        raise InputError(f"--size must be within 16x16 .. 1280x960, got {W} {H}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but CUDA is not available")
    cfg = apply_overrides(preset("gpu" if cuda else "cpu"), {"field.kind": args.field})

    t0 = time.perf_counter()
    print(f"[1/4] synthesising {args.frames} frames at {W}x{H} ({args.sensor} depth) ...", flush=True)
    seq = synthetic_sequence(n_frames=args.frames, width=W, height=H, seed=args.seed, sensor=args.sensor)
    bag_dir = out / "scene_bag"
    write_bag(seq.frames, bag_dir, overwrite=True)
    gt_path = out / "gt_mesh.ply"
    o3d.io.write_triangle_mesh(str(gt_path), seq.mesh)
    save_yaml(cfg, out / "config.yaml")

    print(f"[2/4] mapping the bag in real time on {'cuda' if cuda else 'cpu'} "
          f"({args.frames / 30:.0f} s of frames + {args.extra_seconds:.0f} s), then TSDF fusion at 4 cm "
          "of the same frames ...", flush=True)
    frames = list(open_source(bag_dir))
    opts = BenchOptions(exclude_every=10, seconds=args.extra_seconds, tsdf_voxels=(0.04,), curve_points=3,
                        n_free_points=5000, plots=True, progress=False)
    result, res = run_bench(frames, cfg, out, gt_mesh=seq.mesh, opts=opts, return_run=True)
    ours = result["rows"]["ours"]

    print("[3/4] rendering three views ...", flush=True)
    n = len(seq.frames)
    views = []
    for k, i in enumerate((n // 6, n // 2, (5 * n) // 6)):
        f = seq.frames[i]
        r = res.mapper.render(f.T_WC, f.K, H, W)
        d = out / f"view{k}"
        save_render(r, d)
        views.append(d)

    print("[4/4] writing metrics ...", flush=True)
    m = res.metrics
    metrics = asdict(m)
    metrics["held_out_depth_l1_m"] = ours.get("held_out_depth_l1_cm", float("nan")) / 100
    metrics["held_out_psnr_db"] = ours.get("held_out_psnr_db", float("nan"))
    mm = MeshMetrics(**{k: ours[k] for k in MeshMetrics.__dataclass_fields__})
    metrics["mesh_vs_gt"] = mm.to_dict()
    metrics["comparison"] = {"rows": result["rows"], "ratios": result["ratios"]}
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, default=float) + "\n")

    rows = [
        ("frames mapped / held out / dropped", f"{m.frames_added} / {m.frames_held_out} / {m.frames_dropped}"
         " (dropped: the queue was full while training, as on the live node)"),
        ("keyframes, training steps", f"{m.keyframes}, {m.steps}"),
        ("throughput", f"{m.rays_per_s:,.0f} rays/s, {m.samples_per_s:,.0f} samples/s on {m.device}"),
        ("held-out depth L1", f"{100 * metrics['held_out_depth_l1_m']:.2f} cm"),
        ("held-out PSNR", f"{metrics['held_out_psnr_db']:.2f} dB"),
        ("mesh Chamfer-L1", f"{mm.chamfer_l1_cm:.2f} cm"),
        ("mesh F-score @2cm / @5cm", f"{100 * mm.fscore_2cm:.1f} / {100 * mm.fscore_5cm:.1f} %"),
        ("total time", f"{time.perf_counter() - t0:.0f} s"),
        ("map", str(out / "map.pt")),
        ("mesh (open in any PLY viewer)", str(out / "mesh.ply")),
        ("TSDF 4 cm mesh (same frames)", str(out / "tsdf_4cm.ply")),
        ("ground-truth mesh", str(gt_path)),
        ("rendered views", ", ".join(f"{v}/color.png" for v in views)),
        ("comparison images", ", ".join(str(out / p) for p in result.get("plots", []))),
        ("metrics", f"{metrics_path}, {out / 'bench.json'}"),
        ("input bag (ros2 bag play it)", str(bag_dir)),
    ]
    w = max(len(k) for k, _ in rows)
    print("\nneural_mapping demo")
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    print("\nThe neural map against TSDF fusion at 4 cm on the same frames (ratios: ours / TSDF):\n")
    print(table(result))
    return 0 if np.isfinite(m.final_loss) else 1
