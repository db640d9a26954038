"""`neural-mapping synth`: render a synthetic scene (the room, the mirror room, or the 40 x 20 m floor)
and write it in a dataset layout or as a bag, with its ground-truth mesh."""

from __future__ import annotations

import shutil
from pathlib import Path

from neural_mapping.errors import InputError

LAYOUTS = ("3dmatch", "replica", "tum", "bag")


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output directory (new or empty; for bag: the bag directory)")
    p.add_argument("--format", choices=LAYOUTS, default="3dmatch", help="layout to write (default 3dmatch)")
    p.add_argument("--frames", type=int, default=None,
                   help="number of frames (default 60; floor: 4000, a walk of ~310 m)")
    p.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"), help="image size (default 160 120)")
    p.add_argument("--scene", choices=("room", "mirror", "floor"), default="room",
                   help="room; mirror: the room with a mirror and a glossy sphere, one-bounce reflections; floor: "
                        "a 40 x 20 m site, a corridor and ten furnished rooms, walked through "
                        "(neural_mapping/io/floor_scene.py)")
    p.add_argument("--seed", type=int, default=0, help="random seed (trajectory phase, noise)")
    p.add_argument("--noise", type=float, default=0.0, metavar="STD", help="depth noise std (m)")
    p.add_argument("--dropout", type=float, default=0.0, metavar="P", help="probability a depth pixel is invalid")
    p.add_argument("--sensor", choices=("clean", "kinect", "realsense"), default="clean",
                   help="depth sensor model: axial noise growing with depth, random and depth-edge dropouts "
                        "(neural_mapping/io/sensor.py; default clean)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the stamps (default 30)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def prepare_out(out: Path, overwrite: bool) -> None:
    """--out must be new or empty, unless --overwrite."""
    if out.exists():
        if out.is_file():
            raise InputError(f"{out}: exists and is a file")
        if any(out.iterdir()):
            if not overwrite:
                raise InputError(f"{out}: exists and is not empty (use --overwrite to replace it)")
            shutil.rmtree(out)
        else:
            out.rmdir()


def run(args) -> int:
    from neural_mapping.io.synthetic import synthetic_sequence

    out = Path(args.out)
    w, h = args.size
    scene = getattr(args, "scene", "room")
    if args.frames is None:
        from neural_mapping.io.floor_scene import DEFAULT_FRAMES

        args.frames = DEFAULT_FRAMES if scene == "floor" else 60
    if args.frames < 1 or w < 8 or h < 8:
        raise InputError(f"--frames must be >= 1 and --size at least 8 8, got {args.frames} frames {w}x{h}")
    if not 0.0 <= args.dropout < 1.0 or args.noise < 0 or args.fps <= 0:
        raise InputError(f"--dropout must be in [0, 1), --noise >= 0, --fps > 0; got {args.dropout}, {args.noise}, {args.fps}")
    prepare_out(out, args.overwrite)
    if scene == "floor":  # frames rendered one at a time as they are written
        from neural_mapping.io.floor_scene import floor_sequence

        seq = floor_sequence(n_frames=args.frames, width=w, height=h, seed=args.seed, noise_std_m=args.noise,
                             dropout=args.dropout, fps=args.fps, sensor=args.sensor)
    else:
        seq = synthetic_sequence(n_frames=args.frames, width=w, height=h, seed=args.seed, noise_std_m=args.noise,
                                 dropout=args.dropout, fps=args.fps, sensor=args.sensor, scene=scene)
    n = write_layout(seq.frames, out, args.format, storage=args.storage)
    import open3d as o3d

    mesh_path = out / "gt_mesh.ply"
    o3d.io.write_triangle_mesh(str(mesh_path), seq.mesh)
    print(f"wrote {n} frames {w}x{h} ({args.format}{'/' + args.storage if args.format == 'bag' else ''}) "
          f"to {out} and the ground-truth mesh {mesh_path}")
    return 0


def write_layout(frames, out: Path, fmt: str, storage: str = "mcap") -> int:
    """Write frames to ``out`` in a dataset layout or as a bag directory; returns frames written."""
    if fmt == "bag":
        from neural_mapping.io.bag import write_bag

        frames = list(frames)
        write_bag(frames, out, storage=storage)
        return len(frames)
    from neural_mapping.io.datasets import WRITERS

    return WRITERS[fmt](frames, out)
