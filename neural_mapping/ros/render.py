"""A rendered view as a sequence of jobs on the online core: bands of rows, other jobs in between.

One ``Mapper.render`` of 1024x768 took 27-90 s on 2 cores; as one job on the trainer it held
every query and the node's shutdown for that long. :func:`render_in_chunks` renders a band of
rows per :meth:`OnlineMapper.run` job (about ``chunk_rays`` rays each, the band's intrinsics
are the image's with the principal point moved up by the band's first row), so a query handed
to the trainer meanwhile waits for one band at most, and a cancelled or late render stops
between two bands. No rclpy here.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

#: rays rendered per job (one band of rows): ~0.15-0.5 s at the cpu preset on 2 cores (1.8 s with 6 jobs sharing them)
CHUNK_RAYS = 4096


class RenderStopped(RuntimeError):
    """The render was cancelled (shutdown) or ran past its deadline; the message says which."""


def band_intrinsics(K: np.ndarray, first_row: int) -> np.ndarray:
    """Intrinsics of the rows from ``first_row`` on of an image with intrinsics K."""
    Kb = np.array(K, dtype=np.float64, copy=True)
    Kb[1, 2] -= first_row
    return Kb


def render_in_chunks(core, T_WC: np.ndarray, K: np.ndarray, H: int, W: int, *, chunk_rays: int = CHUNK_RAYS,
                     cancelled: Callable[[], bool] = lambda: False, deadline: float | None = None):
    """(color (H, W, 3), depth (H, W)) of the live map seen from T_WC, one band of rows per core job.

    Raises :class:`RenderStopped` when ``cancelled()`` turns true or ``time.monotonic()`` passes
    ``deadline`` before a band starts.
    """
    rows = max(1, int(chunk_rays) // max(int(W), 1))
    color = np.zeros((H, W, 3), np.float32)
    depth = np.zeros((H, W), np.float32)
    for r0 in range(0, H, rows):
        if cancelled():
            raise RenderStopped("render cancelled: the node is shutting down")
        if deadline is not None and time.monotonic() > deadline:
            raise RenderStopped(f"render stopped after {r0} of {H} rows: past its time budget (render_timeout_s)")
        h = min(rows, H - r0)
        Kb = band_intrinsics(K, r0)
        r = core.run(lambda m: m.render(T_WC, Kb, h, W))
        color[r0:r0 + h] = r.color
        depth[r0:r0 + h] = r.depth
    return color, depth
