"""The submap grid: square x-y cells of ``size_m`` in the map frame, each grown by ``overlap_m``.

Cell ``(i, j)`` covers ``[(i-1/2) s, (i+1/2) s) x [(j-1/2) s, (j+1/2) s)`` (z is not split: centred on the
map frame's origin, so the place where mapping starts, usually the origin, lies in one cell's core); its submap trains on
what lies in the cell grown by ``o = overlap_m`` on each side (its *grown box*). Each cell has a
partition-of-unity weight, the product of one 1-D hat per axis::

    w(x) = clamp((x - (x0 - o)) / 2o, 0, 1) * clamp((x1 + o - x) / 2o, 0, 1)

1 in the cell's core, 1/2 on its border, 0 on the border of its grown box: the weights of all
cells sum to 1 everywhere when ``size_m >= 2 * overlap_m`` (docs/submaps.md). Each submap works
in a frame shifted by :meth:`SubmapGrid.origin_W` (the cell's centre snapped to the coverage
block lattice ``block_m``, z = 0), so coverages merge by whole blocks.
"""

from __future__ import annotations

import numpy as np


def submap_id(key) -> str:
    """The stable name of cell ``key`` = (i, j): ``"s+0003-0001"`` (also its file stem)."""
    i, j = (int(k) for k in key)
    return f"s{i:+05d}{j:+05d}"


def parse_submap_id(sid: str) -> tuple[int, int]:
    """Inverse of :func:`submap_id`; ValueError for any other string."""
    if len(sid) != 11 or sid[0] != "s" or sid[1] not in "+-" or sid[6] not in "+-":
        raise ValueError(f"not a submap id: {sid!r}")
    return int(sid[1:6]), int(sid[6:11])


class SubmapGrid:
    """Cells, grown boxes, local origins and blending weights (see module doc)."""

    def __init__(self, size_m: float, overlap_m: float, block_m: float) -> None:
        if not size_m > 0 or overlap_m < 0 or 2 * overlap_m > size_m or not block_m > 0:
            raise ValueError(f"submap grid: need size_m > 0, 0 <= overlap_m <= size_m / 2, block_m > 0; got "
                             f"{size_m}, {overlap_m}, {block_m}")
        self.size_m = float(size_m)
        self.overlap_m = float(overlap_m)
        self.block_m = float(block_m)

    def as_dict(self) -> dict:
        return {"size_m": self.size_m, "overlap_m": self.overlap_m, "block_m": self.block_m}

    def same_as(self, d: dict) -> bool:
        return all(abs(float(d.get(k, -1)) - v) < 1e-9 for k, v in self.as_dict().items())

    def key_of(self, pts_W: np.ndarray) -> np.ndarray:
        """(N, 2) int64 cell of each point (N, >=2)."""
        return np.floor(np.asarray(pts_W, np.float64)[:, :2] / self.size_m + 0.5).astype(np.int64)

    def keys_near(self, pts_W: np.ndarray, min_points: int = 1) -> list[tuple[tuple[int, int], int]]:
        """[(key, n)] of the cells whose grown box holds at least ``min_points`` of the points (N, 3),
        most points first."""
        p = np.asarray(pts_W, np.float64)[:, :2]
        if len(p) == 0:
            return []
        s, o = self.size_m, self.overlap_m
        lo = np.floor((p - o) / s + 0.5).astype(np.int64)  # a point lies in the grown boxes of cells lo..hi
        hi = np.floor((p + o) / s + 0.5).astype(np.int64)
        counts: dict[tuple[int, int], int] = {}
        for di in range(int((hi[:, 0] - lo[:, 0]).max()) + 1):
            for dj in range(int((hi[:, 1] - lo[:, 1]).max()) + 1):
                k = lo + np.array([di, dj])
                ok = (k[:, 0] <= hi[:, 0]) & (k[:, 1] <= hi[:, 1])
                u, n = np.unique(k[ok], axis=0, return_counts=True)
                for kk, nn in zip(map(tuple, u.tolist()), n.tolist()):
                    counts[kk] = counts.get(kk, 0) + nn
        out = [((int(k[0]), int(k[1])), n) for k, n in counts.items() if n >= min_points]
        return sorted(out, key=lambda kn: (-kn[1], kn[0]))

    def cell_box(self, key) -> tuple[np.ndarray, np.ndarray]:
        """(lo (2,), hi (2,)) x-y of the cell in the map frame."""
        lo = (np.asarray(key, np.float64) - 0.5) * self.size_m
        return lo, lo + self.size_m

    def grown_box(self, key) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.cell_box(key)
        return lo - self.overlap_m, hi + self.overlap_m

    def in_grown_box(self, key, pts_W: np.ndarray) -> np.ndarray:
        """(N,) bool: points (N, >=2) inside the cell's grown box (x-y)."""
        lo, hi = self.grown_box(key)
        p = np.asarray(pts_W)[:, :2]
        return np.all((p >= lo) & (p < hi), axis=1)

    def origin_W(self, key) -> np.ndarray:
        """(3,) float64 origin of the submap's local frame: the cell centre snapped to ``block_m``, z = 0."""
        lo, hi = self.cell_box(key)
        c = np.round((lo + hi) / 2.0 / self.block_m) * self.block_m
        return np.array([c[0], c[1], 0.0])

    def weights(self, key, pts_W: np.ndarray) -> np.ndarray:
        """(N,) float64 partition-of-unity weight of the cell at points (N, >=2) (see module doc)."""
        lo, hi = self.cell_box(key)
        p = np.asarray(pts_W, np.float64)[:, :2]
        o = self.overlap_m
        if o == 0:
            return np.all((p >= lo) & (p < hi), axis=1).astype(np.float64)
        w = np.clip((p - (lo - o)) / (2 * o), 0, 1) * np.clip((hi + o - p) / (2 * o), 0, 1)
        return w[:, 0] * w[:, 1]
