"""Soak of the online core without ROS: memory of the core and the products, apart from rclpy and DDS.

An ``OnlineMapper`` (cpu preset) is fed 320x240 synthetic frames at 60 Hz (30 frames of one scene, cycled,
so the scene is fully seen within a second); every 5 s the five products the node publishes (mesh with its
tile cache, 3D occupancy, 2D occupancy, ESDF slice, a 160x120 render) are computed on the map copy, then,
with ``--trim``, the C heap is trimmed as the node does (``ros/heap.py``). Every 10 s it prints the resident
size, glibc's heap in use and free (``mallinfo2``), the keyframe buffer and the coverage blocks: growth that
stops when the keyframe buffer is full is the buffer; free heap that rises without in-use heap is arena
creep. Not a CI test.

Usage: .venv/bin/python -u benchmarks/bench_soak_core.py [--seconds 180] [--trim]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _heap_mb() -> tuple[float, float]:
    """(in use, free) MB of glibc's heap; (nan, nan) elsewhere."""
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return float("nan"), float("nan")
    fn.restype = _MallInfo2
    mi = fn()
    return mi.uordblks / 1e6, mi.fordblks / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--hz", type=float, default=60.0)
    ap.add_argument("--trim", action="store_true", help="malloc_trim after the products, as the node does")
    a = ap.parse_args()

    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper
    from neural_mapping.online import OnlineMapper
    from neural_mapping.products import MeshExtractor, esdf_slice, occupancy_grid_3d, occupancy_slice_2d
    from neural_mapping.ros import heap
    from neural_mapping.ros.status import rss_mb

    frames = synthetic_sequence(n_frames=30, width=320, height=240, fps=30.0).frames
    core = OnlineMapper(Mapper(preset("cpu")), queue_size=8)
    core.start()
    t0 = time.monotonic()
    next_t, last_products, last_print, i, ex = t0, t0, t0, 0, None

    def report() -> None:
        m = core.mapper
        used, free = _heap_mb()
        print(f"t={time.monotonic() - t0:5.0f} s  rss {rss_mb():7.1f} MB  heap in use {used:6.1f} free {free:6.1f} MB  "
              f"keyframes {m.stats.keyframes} ({m.keyframes.nbytes / 1e6:.1f} MB)  coverage blocks {m.coverage.n_blocks}  "
              f"steps {m.stats.steps}  added {m.stats.frames_added}", flush=True)

    try:
        while time.monotonic() - t0 < a.seconds:
            f = frames[i % len(frames)]
            core.put(dataclasses.replace(f, stamp_ns=frames[0].stamp_ns + int(i * 1e9 / a.hz)))
            i += 1
            now = time.monotonic()
            if now - last_products >= 5.0:
                with core.map_copy() as snap:
                    if ex is None or ex.mapper is not snap:
                        ex = MeshExtractor(snap, snapshot=False)
                    ex.extract(full=False, budget_s=0.5)
                    res = snap.cfg.occupancy.resolution_m
                    occupancy_grid_3d(snap)
                    occupancy_slice_2d(snap, 0.1, 1.5, res)
                    esdf_slice(snap, 1.0, res)
                    snap.render(f.T_WC, f.K * [[0.5], [0.5], [1.0]], 120, 160)
                if a.trim:
                    heap.trim()
                last_products = time.monotonic()
            if now - last_print >= 10.0:
                report()
                last_print = now
            next_t += 1.0 / a.hz
            time.sleep(max(0.0, next_t - time.monotonic()))
        report()
    finally:
        core.stop()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
    sys.exit(main())
