"""`neural-mapping query MAP --points P.npy --out Q.npz`: sdf, gradient and occupancy at points."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import MAP_HELP, load_map_arg
from neural_mapping.io.outputs import atomic_output, require_writable_dir


def add_arguments(p) -> None:
    p.add_argument("map", help=MAP_HELP)
    p.add_argument("--points", required=True, help="float32 (N, 3) .npy of points in the map frame")
    p.add_argument("--out", required=True, help="output .npz with sdf (N,), gradient (N, 3), occupancy (N,)")
    p.add_argument("--color", action="store_true", help="also store color (N, 3)")
    p.add_argument("--chunk", type=int, default=1 << 18, help="points per chunk (bounds memory)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device")


def load_points(path: str) -> np.ndarray:
    """(N, 3) points from a .npy file; InputError naming the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: points file not found")
    try:
        pts = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{p}: not a readable .npy array ({e})") from None
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"{p}: points must have shape (N, 3), got {tuple(pts.shape)}")
    if not np.issubdtype(pts.dtype, np.floating):
        raise InputError(f"{p}: points must be float32 (or float64), got {pts.dtype}")
    bad = ~np.isfinite(pts).all(axis=1)  # as the node's query_field: no NaN answers for NaN points
    if bad.any():
        raise InputError(f"{p}: {int(bad.sum())} of {len(pts)} points are not finite (NaN or inf), "
                         f"the first at row {int(np.argmax(bad))}")
    return pts


def run(args) -> int:
    from neural_mapping.products import query_field

    pts = load_points(args.points)
    if not str(args.out).endswith(".npz"):
        raise InputError(f"{args.out}: --out must end in .npz")
    if args.chunk < 1:
        raise InputError(f"--chunk must be positive, got {args.chunk}")
    require_writable_dir(Path(args.out).resolve().parent, "directory of --out")
    mapper = load_map_arg(args.map, args.device)
    t0 = time.perf_counter()
    r = query_field(mapper, pts, want_gradient=True, want_color=args.color, chunk=args.chunk)
    dt = time.perf_counter() - t0
    out = {"sdf": r.sdf, "gradient": r.gradient, "occupancy": r.occupancy}
    if args.color:
        out["color"] = r.color
    with atomic_output(args.out) as f:  # no 0-byte or partial .npz on a full disk
        np.savez(f, **out)
    rate = len(pts) / dt if dt > 0 else float("inf")
    print(f"queried {len(pts)} points in {dt:.2f} s ({rate / 1e6:.2f} M points/s); wrote {args.out}")
    return 0
