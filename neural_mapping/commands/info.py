"""`neural-mapping info INPUT`: format, frame count, size, intrinsics, time span, skipped frames."""

from __future__ import annotations

import numpy as np

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import add_source_arguments, source_kwargs


def add_arguments(p) -> None:
    p.add_argument("input", help="dataset folder (3DMatch, Replica, TUM) or bag")
    add_source_arguments(p)


def run(args) -> int:
    from neural_mapping.io.sources import open_source

    src = open_source(args.input, **source_kwargs(args))
    n, first, t0, t1, lo, hi = 0, None, None, None, None, None
    valid = 0.0
    for f in src:
        if first is None:
            first = f
        n += 1
        t0 = f.stamp_ns if t0 is None else min(t0, f.stamp_ns)
        t1 = f.stamp_ns if t1 is None else max(t1, f.stamp_ns)
        p = f.T_WC[:3, 3]
        lo = p if lo is None else np.minimum(lo, p)
        hi = p if hi is None else np.maximum(hi, p)
        valid += f.n_valid_depth / (f.width * f.height)
    print(f"input:      {src.name}")
    print(f"format:     {src.fmt}")
    if src.fmt == "bag":
        tp = src.topics
        print(f"topics:     color {tp.color}, depth {tp.depth}, info {tp.info}, pose {tp.pose} ({tp.pose_type})")
        st = src.sync_stats
        print(f"sync:       {st.emitted} sets; dropped: {st.dropped_color} colour, {st.dropped_depth} depth, "
              f"{st.dropped_no_pose} without pose, {st.dropped_overflow} overflow")
    if src.fmt == "tum":
        print(f"tum:        {getattr(src, 'unassociated', 0)} rgb images without depth within 20 ms, "
              f"{getattr(src, 'dropped_no_pose', 0)} frames outside the ground truth")
    print(f"frames:     {n} read, {src.skipped} skipped")
    for r in src.skip_reasons[:5]:
        print(f"  skipped:  {r}")
    if first is None:
        raise InputError(f"{src.name}: no readable frames ({src.skipped} skipped)")
    K = first.K
    print(f"size:       {first.width}x{first.height}")
    print(f"intrinsics: fx={K[0, 0]:.6g} fy={K[1, 1]:.6g} cx={K[0, 2]:.6g} cy={K[1, 2]:.6g}")
    print(f"time span:  {(t1 - t0) * 1e-9:.3f} s ({t0 * 1e-9:.6f} .. {t1 * 1e-9:.6f})")
    print(f"positions:  {np.round(lo, 3).tolist()} .. {np.round(hi, 3).tolist()} m")
    print(f"valid depth: {100.0 * valid / n:.1f} % of pixels on average")
    return 0
