"""A rendered view as a sequence of jobs on the online core: bands of rows, other jobs in between.

One ``Mapper.render`` of 1024x768 took 27-90 s on 2 cores; as one job on the trainer it held
every query and the node's shutdown for that long. :func:`render_in_chunks` renders a band of
rows per :meth:`OnlineMapper.run` job (each band sized to take about :data:`BAND_TARGET_S` at
the speed the previous one ran; the band's intrinsics are the image's with the principal point
moved up by the band's first row), so a query handed to the trainer meanwhile waits for one
band at most. A cancelled or late render stops inside the band in flight, before the next
evaluation of the field (:func:`stop_inside`), so shutdown does not wait for the band. No rclpy here.
"""

from __future__ import annotations

import contextlib
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


def band_intrinsics(K: np.ndarray, first_row: int, first_col: int = 0) -> np.ndarray:
    """Intrinsics of the part from row ``first_row``, column ``first_col`` on of an image with intrinsics K."""
    Kb = np.array(K, dtype=np.float64, copy=True)
    Kb[1, 2] -= first_row
    Kb[0, 2] -= first_col
    return Kb


@contextlib.contextmanager
def stop_inside(field, check: Callable[[], None]):
    """``check()`` called before every evaluation of ``field`` (a forward pre-hook) while inside.

    A band is one ``Mapper.render``: a sphere trace evaluates the field once per step (96 steps at
    the cpu preset) and volume rendering twice per chunk of rays, so a ``check`` that raises
    :class:`RenderStopped` ends the band within one field evaluation instead of at its end (a
    one-row band of a wide view took ~6 s at load 10-13 on 2 cores, the whole band being waited for
    at shutdown). The hook is on the live map's field only during the band, on the trainer thread,
    where nothing else evaluates that field meanwhile (steps and other jobs run between bands).
    """
    handle = field.register_forward_pre_hook(lambda _module, _args: check())
    try:
        yield
    finally:
        handle.remove()


def render_in_chunks(core, T_WC: np.ndarray, K: np.ndarray, H: int, W: int, *, chunk_rays: int = FIRST_BAND_RAYS,
                     target_s: float | None = BAND_TARGET_S, cancelled: Callable[[], bool] = lambda: False,
                     deadline: float | None = None):
    """(color (H, W, 3), depth (H, W)) of the live map seen from T_WC, one band of rows per core job.

    The first band has about ``chunk_rays`` rays; with ``target_s`` each later band is sized so it
    takes about ``target_s`` seconds at the speed the previous one ran, between the first band's
    rows and :data:`MAX_BAND_RAYS` (None: all ``chunk_rays``). A row wider than
    :data:`MAX_BAND_RAYS` is rendered in pieces of at most that many columns, one job each.
    Raises :class:`RenderStopped` when ``cancelled()`` turns true, the core stops or
    ``time.monotonic()`` passes ``deadline``: checked before each band and, inside a band, before
    each evaluation of the field (:func:`stop_inside`).
    """
    rows = min_rows = max(1, int(chunk_rays) // max(int(W), 1))
    cols = min(int(W), MAX_BAND_RAYS)
    color = np.zeros((H, W, 3), np.float32)
    depth = np.zeros((H, W), np.float32)
    where = {"row": 0}

    def check() -> None:
        if cancelled() or getattr(core, "stopping", False):
            raise RenderStopped("render cancelled: the node is shutting down")
        if deadline is not None and time.monotonic() > deadline:
            raise RenderStopped(f"render stopped after {where['row']} of {H} rows: past its time budget "
                                "(render_timeout_s)")

    def band(m, Kb, h, w):
        with stop_inside(m.field, check):
            return m.render(T_WC, Kb, h, w)

    r0 = 0
    while r0 < H:
        h = min(rows, H - r0)
        t0 = time.perf_counter()
        for c0 in range(0, W, cols):
            where["row"] = r0
            check()
            w = min(cols, W - c0)
            Kb = band_intrinsics(K, r0, c0)
            r = core.run(lambda m: band(m, Kb, h, w))
            color[r0:r0 + h, c0:c0 + w] = r.color
            depth[r0:r0 + h, c0:c0 + w] = r.depth
        dt = time.perf_counter() - t0
        r0 += h
        if target_s is not None:
            # never below the first band: a band's time is mostly fixed cost when the machine is busy
            rows = max(min_rows, min(2 * rows, round(h * target_s / max(dt, 1e-3)), MAX_BAND_RAYS // max(int(W), 1)))
    return color, depth
