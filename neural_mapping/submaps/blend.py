"""Field queries across submaps: one blended field, so products see no seam and no second sheet.

A point's value is ``sum_i w_i v_i / sum_i w_i`` over the submaps whose grown box holds it, with
``w_i`` the cell's partition-of-unity weight (:meth:`SubmapGrid.weights`) times 1 where submap i's
own coverage observed the point and :data:`UNSEEN_WEIGHT` where it did not (its extrapolation never
outvotes a neighbour that saw the place; where no submap saw it the weights stay a partition of
unity). Submaps of several robots covering one cell are all blended. Gradients and colours use the
same weights (the weights' own gradient is left out: it multiplies the submaps' disagreement,
which is small where they overlap). Points no submap covers get ``+truncation`` (free, unknown)
and a zero gradient.
"""

from __future__ import annotations

import numpy as np

#: weight factor of a submap where its own coverage has not observed the point
UNSEEN_WEIGHT = 1e-3


def blend_query(entries, grid, pts_W: np.ndarray, want_gradient: bool, want_color: bool, empty_value: float,
                chunk: int = 65536):
    """(sdf (N,), gradient (N, 3) | None, color (N, 3) | None, covered (N,) bool).

    ``entries``: iterable of (submap, mapper) whose mapper answers in the submap's frame."""
    pts = np.asarray(pts_W, np.float64)
    N = len(pts)
    wsum = np.zeros(N)
    vsum = np.zeros(N)
    gsum = np.zeros((N, 3)) if want_gradient else None
    csum = np.zeros((N, 3)) if want_color else None
    for sub, m in entries:
        inside = np.flatnonzero(grid.in_grown_box(sub.key, pts))
        if len(inside) == 0:
            continue
        p_S = (pts[inside] - sub.origin_W)
        w = grid.weights(sub.key, pts[inside])
        seen = m.coverage.observed(p_S)
        w = w * np.where(seen, 1.0, UNSEEN_WEIGHT)
        r = m.query(p_S.astype(np.float32), want_gradient=want_gradient, want_color=want_color, chunk=chunk)
        wsum[inside] += w
        vsum[inside] += w * r.sdf
        if want_gradient:
            gsum[inside] += w[:, None] * r.gradient
        if want_color:
            csum[inside] += w[:, None] * r.color
    covered = wsum > 0
    safe = np.where(covered, wsum, 1.0)
    sdf = np.where(covered, vsum / safe, empty_value).astype(np.float32)
    grad = None if gsum is None else (gsum / safe[:, None]).astype(np.float32)
    col = None
    if csum is not None:
        col = np.where(covered[:, None], csum / safe[:, None], 0.5).astype(np.float32)
    return sdf, grad, col, covered
