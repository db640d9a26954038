"""`neural-mapping render MAP --pose POSE.txt --intrinsics FX FY CX CY --size W H --out DIR`.

Writes DIR/color.png, DIR/depth.png (16-bit millimetres) and DIR/depth.npy (float32 metres,
0 where nothing was hit). POSE.txt holds a 4x4 camera-to-world matrix (OpenCV axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import MAP_HELP, load_map_arg
from neural_mapping.io.outputs import atomic_output, require_writable_dir


def add_arguments(p) -> None:
    p.add_argument("map", help=MAP_HELP)
    p.add_argument("--pose", required=True, metavar="POSE.txt", help="4x4 camera-to-world matrix, OpenCV axes")
    p.add_argument("--intrinsics", required=True, type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"))
    p.add_argument("--size", required=True, type=int, nargs=2, metavar=("W", "H"))
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device")


def read_pose(path: str | Path) -> np.ndarray:
    """A 4x4 rigid camera-to-world matrix from a text file; InputError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: pose file not found")
    try:
        T = np.loadtxt(p, dtype=np.float64)
    except ValueError as e:
        raise InputError(f"{p}: not a 4x4 matrix of numbers ({e})") from None
    if T.shape != (4, 4):
        raise InputError(f"{p}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InputError(f"{p}: pose has non-finite entries")
    R = T[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
        raise InputError(f"{p}: not a rigid transform (rotation must be orthonormal, last row 0 0 0 1)")
    return T


def save_render(r, out: str | Path) -> None:
    """Write a RenderResult as out/color.png, out/depth.png (16-bit mm) and out/depth.npy (float32 m)."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mm = np.clip(np.round(r.depth * 1000.0), 0, 65535).astype(np.uint16)
    with atomic_output(out / "color.png") as f:  # each file whole or not at all (full disk)
        Image.fromarray((np.clip(r.color, 0, 1) * 255 + 0.5).astype(np.uint8)).save(f, format="PNG")
    with atomic_output(out / "depth.png") as f:
        Image.fromarray(mm).save(f, format="PNG")
    with atomic_output(out / "depth.npy") as f:
        np.save(f, r.depth.astype(np.float32))


def run(args) -> int:
    from PIL import Image

    from neural_mapping.camera import intrinsics

    W, H = args.size
    if W < 1 or H < 1 or W * H > 16_000_000:
        raise InputError(f"--size must be positive and at most 16 megapixels, got {W} {H}")
    fx, fy, cx, cy = args.intrinsics
    if not (fx > 0 and fy > 0) or not np.all(np.isfinite(args.intrinsics)):
        raise InputError(f"--intrinsics: focal lengths must be positive and all values finite, got {args.intrinsics}")
    T_WC = read_pose(args.pose)
    out = require_writable_dir(args.out, "output directory (--out)", create=True)
    mapper = load_map_arg(args.map, args.device)
    r = mapper.render(T_WC, intrinsics(fx, fy, cx, cy), H, W)
    save_render(r, out)
    hit = r.depth > 0
    print(f"rendered {W}x{H}: surface in {hit.mean() * 100:.1f}% of pixels"
          + (f", depth {r.depth[hit].min():.3f}..{r.depth[hit].max():.3f} m" if hit.any() else ""))
    print(f"wrote {out / 'color.png'}, {out / 'depth.png'} (16-bit mm), {out / 'depth.npy'} (float32 m)")
    return 0
