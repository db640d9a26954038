"""A rendered view as a sequence of jobs on the online core: bands of rows, other jobs in between.

One ``Mapper.render`` of 1024x768 took 27-90 s on 2 cores; as one job on the trainer it held
every query and the node's shutdown for that long. :func:`render_in_chunks` renders a band of
rows per :meth:`OnlineMapper.run` job (each band sized to take about :data:`BAND_TARGET_S` at
the speed the previous one ran; the band's intrinsics are the image's with the principal point
moved up by the band's first row), so a query handed to the trainer meanwhile waits for one
band at most, and a cancelled or late render stops between two bands. No rclpy here.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

#: rays of the first band; later bands are sized from the time the previous one took
FIRST_BAND_RAYS = 512
#: time one band (one job on the trainer) should take (s): what a query or a shutdown waits at most
BAND_TARGET_S = 0.25
#: most rays of one band, whatever the previous band's speed (rays that miss everything are cheap, so
#: bands grown over a cheap part of the image must not become minutes long where the surfaces are):
#: ~0.1 s at the cpu preset on 2 cores, 1-1.3 s with six jobs sharing them
MAX_BAND_RAYS = 1024


class RenderStopped(RuntimeError):
    """The render was cancelled (shutdown) or ran past its deadline; the message says which."""


def band_intrinsics(K: np.ndarray, first_row: int) -> np.ndarray:
    """Intrinsics of the rows from ``first_row`` on of an image with intrinsics K."""
    Kb = np.array(K, dtype=np.float64, copy=True)
    Kb[1, 2] -= first_row
    return Kb


def render_in_chunks(core, T_WC: np.ndarray, K: np.ndarray, H: int, W: int, *, chunk_rays: int = FIRST_BAND_RAYS,
                     target_s: float | None = BAND_TARGET_S, cancelled: Callable[[], bool] = lambda: False,
                     deadline: float | None = None):
    """(color (H, W, 3), depth (H, W)) of the live map seen from T_WC, one band of rows per core job.

    The first band has about ``chunk_rays`` rays; with ``target_s`` each later band is sized so it
    takes about ``target_s`` seconds at the speed the previous one ran, between the first band's
    rows and :data:`MAX_BAND_RAYS` (None: all ``chunk_rays``).
    Raises :class:`RenderStopped` when ``cancelled()`` turns true or ``time.monotonic()`` passes
    ``deadline`` before a band starts.
    """
    rows = min_rows = max(1, int(chunk_rays) // max(int(W), 1))
    color = np.zeros((H, W, 3), np.float32)
    depth = np.zeros((H, W), np.float32)
    r0 = 0
    while r0 < H:
        if cancelled():
            raise RenderStopped("render cancelled: the node is shutting down")
        if deadline is not None and time.monotonic() > deadline:
            raise RenderStopped(f"render stopped after {r0} of {H} rows: past its time budget (render_timeout_s)")
        h = min(rows, H - r0)
        Kb = band_intrinsics(K, r0)
        t0 = time.perf_counter()
        r = core.run(lambda m: m.render(T_WC, Kb, h, W))
        dt = time.perf_counter() - t0
        color[r0:r0 + h] = r.color
        depth[r0:r0 + h] = r.depth
        r0 += h
        if target_s is not None:
            # never below the first band: a band's time is mostly fixed cost when the machine is busy
            rows = max(min_rows, min(2 * rows, round(h * target_s / max(dt, 1e-3)), MAX_BAND_RAYS // max(int(W), 1)))
    return color, depth
