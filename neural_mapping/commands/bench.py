"""`neural-mapping bench INPUT --out DIR`: our map (real time) against Open3D TSDF fusion on the same frames.

Writes DIR/bench.json (the table, ratios, distance errors, error curve), DIR/mesh.ply, DIR/map.pt,
DIR/tsdf_*.ply and with --plots DIR/{curve,views,occupancy}.png; prints the table (Markdown).
The logic is in :mod:`neural_mapping.benchmark`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import add_source_arguments, source_kwargs


def add_arguments(p) -> None:
    p.add_argument("input", help="dataset folder (3DMatch, Replica, TUM) or bag")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--gt-mesh", default=None, metavar="MESH", help="ground-truth mesh: accuracy and distance errors")
    p.add_argument("--exclude-every", type=int, default=0, metavar="N", help="hold out frames 0, N, 2N, ...")
    p.add_argument("--seconds", type=float, default=20.0, metavar="S", help="our training after the last frame (default 20)")
    p.add_argument("--rate", type=float, default=None, metavar="HZ", help="feed rate (default: the frames' stamps)")
    p.add_argument("--plots", action="store_true", help="write curve.png, views.png, occupancy.png")
    p.add_argument("--preset", choices=("cpu", "gpu"), default=None, help="configuration preset (default: by device)")
    p.add_argument("--config", default=None, metavar="YAML", help="configuration file applied on top of the preset")
    p.add_argument("--field", choices=("sdf", "nerf"), default=None, help="field kind (overrides the config)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device (overrides)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="read at most N input frames")
    p.add_argument("--frames-per-step", type=int, default=None, metavar="N",
                   help="frames integrated between two training steps (default: all queued, up to the queue size)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_source_arguments(p)


def run(args) -> int:
    import open3d as o3d

    from neural_mapping.benchmark import BenchOptions, run_bench, table
    from neural_mapping.commands.map import resolve_config
    from neural_mapping.io.sources import open_source

    if args.exclude_every < 0 or args.seconds < 0 or (args.rate is not None and not args.rate > 0):
        raise InputError("--exclude-every and --seconds must be >= 0 and --rate > 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    gt = None
    if args.gt_mesh:
        if not Path(args.gt_mesh).is_file():
            raise InputError(f"{args.gt_mesh}: no such mesh")
        gt = o3d.io.read_triangle_mesh(args.gt_mesh)
        if len(gt.triangles) == 0:
            raise InputError(f"{args.gt_mesh}: no triangles")
    cfg = resolve_config(args)
    src = open_source(args.input, **source_kwargs(args))
    frames = []
    for f in src:
        if args.max_frames is not None and len(frames) >= args.max_frames:
            break
        frames.append(f)
    if not frames:
        raise InputError(f"{args.input}: no frames")
    opts = BenchOptions(exclude_every=args.exclude_every, seconds=args.seconds, rate_hz=args.rate,
                        plots=args.plots, progress=not args.quiet and sys.stderr.isatty())
    if args.frames_per_step is not None:
        opts.frames_per_step = args.frames_per_step
    result = run_bench(frames, cfg, args.out, gt_mesh=gt, opts=opts)
    print(table(result))
    print(f"wrote {Path(args.out) / 'bench.json'}" + (f" and {', '.join(result['plots'])}" if args.plots else ""))
    return 0
