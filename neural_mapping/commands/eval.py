"""`neural-mapping eval MESH --gt GT_MESH [--frames INPUT] [--json OUT]`: mesh accuracy and completion."""

from __future__ import annotations

import json
from pathlib import Path

from neural_mapping.errors import InputError
from neural_mapping.io.outputs import atomic_output, require_writable_dir


def add_arguments(p) -> None:
    from neural_mapping.io.cli_args import add_source_arguments

    p.add_argument("mesh", help="predicted mesh (.ply / .obj)")
    p.add_argument("--gt", required=True, help="ground-truth mesh (.ply / .obj), same frame")
    p.add_argument("--frames", default=None, metavar="INPUT",
                   help="dataset folder or bag: restrict the ground truth to surfaces its frames saw")
    p.add_argument("--points", type=int, default=200_000, help="points sampled on each mesh")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the metrics as JSON")
    add_source_arguments(p)


def _read_mesh(path: str):
    import open3d as o3d

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: mesh file not found")
    m = o3d.io.read_triangle_mesh(str(p))
    if len(m.triangles) == 0:
        raise InputError(f"{p}: no triangles (not a readable mesh?)")
    return m


def run(args) -> int:
    from neural_mapping.evaluation import mesh_metrics

    if args.points < 1000:
        raise InputError(f"--points must be at least 1000, got {args.points}")
    if args.json:
        require_writable_dir(Path(args.json).resolve().parent, "directory of --json")
    pred, gt = _read_mesh(args.mesh), _read_mesh(args.gt)
    frames = None
    if args.frames:
        from neural_mapping.io.cli_args import source_kwargs
        from neural_mapping.io.sources import open_source

        frames = list(open_source(args.frames, **source_kwargs(args)))
        if not frames:
            raise InputError(f"{args.frames}: no readable frames")
    try:
        m = mesh_metrics(pred, gt, n_points=args.points, frames=frames)
    except ValueError as e:
        raise InputError(str(e)) from None
    print(f"{args.mesh} vs {args.gt}" + (f" (GT seen by {len(frames)} frames)" if frames else ""))
    print(m.table())
    if args.json:
        with atomic_output(args.json) as f:
            f.write(json.dumps({"mesh": str(args.mesh), "gt": str(args.gt), "frames": args.frames, **m.to_dict()},
                               indent=2).encode())
        print(f"wrote {args.json}")
    return 0
