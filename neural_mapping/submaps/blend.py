"""Field queries across submaps: one blended field, so products see no seam and no second sheet.

A point's value is ``sum_i w_i v_i / sum_i w_i`` over the submaps whose grown box holds it, with
``w_i`` the cell's partition-of-unity weight (:meth:`SubmapGrid.weights`) times a factor going from
:data:`UNSEEN_WEIGHT` where submap i's own coverage has not observed the place to 1 where it has
(:func:`seen_fraction`, continuous: its extrapolation never outvotes a neighbour that saw the
place; where no submap saw it the weights stay a partition of unity). Submaps of several robots covering one cell are all blended. Gradients and colours use the
same weights (the weights' own gradient is left out: it multiplies the submaps' disagreement,
which is small where they overlap). Points no submap covers get ``+truncation`` (free, unknown)
and a zero gradient.
"""

from __future__ import annotations

import numpy as np

#: weight factor of a submap where its own coverage has not observed the point
UNSEEN_WEIGHT = 0.05
#: the observed flags are interpolated over a lattice of this many coverage voxels: the factor then
#: changes at most 1 / UNSEEN_WEIGHT times over that distance (a 5 cm lattice with a 1e-3 floor
#: put 3 cm steps per 5 mm into the blend where two submaps' extrapolations disagreed)
SEEN_LATTICE_VOXELS = 4


def seen_fraction(coverage, pts: np.ndarray) -> np.ndarray:
    """(N,) in [0, 1]: the coverage's observed flags at the nodes of a lattice of
    :data:`SEEN_LATTICE_VOXELS` voxels, interpolated trilinearly, so the weight it scales is continuous
    (a per-voxel 0/1 factor put steps of centimetres into the blend where two submaps' coverages differ)."""
    v = coverage.voxel_m * SEEN_LATTICE_VOXELS
    g = np.asarray(pts, np.float64) / v - 0.5  # voxel-centre lattice coordinates
    i0 = np.floor(g)
    f = g - i0
    out = np.zeros(len(g))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                c = (i0 + np.array([dx, dy, dz]) + 0.5) * v
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out += w * coverage.observed(c)
    return out


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
        w = w * (UNSEEN_WEIGHT + (1.0 - UNSEEN_WEIGHT) * seen_fraction(m.coverage, p_S))
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
