"""A dense boolean voxel volume with its origin: what the coverage hands the products (the
observed or surface voxels over a box, the changed blocks)."""

from __future__ import annotations

import numpy as np


class VoxelMask:
    """A dense boolean voxel volume with its origin (voxel index of mask[0, 0, 0])."""

    def __init__(self, voxel_m: float, origin: np.ndarray, mask: np.ndarray) -> None:
        self.voxel_m = voxel_m
        self.origin = origin  # (3,) int64
        self.mask = mask  # (X, Y, Z) bool

    def contains(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) bool for points (N, 3)."""
        out = np.zeros(len(pts_W), dtype=bool)
        if self.mask.size == 0:
            return out
        local = np.floor(np.asarray(pts_W, dtype=np.float64) / self.voxel_m).astype(np.int64) - self.origin
        ok = np.all((local >= 0) & (local < np.array(self.mask.shape)), axis=1)
        li = local[ok]
        out[ok] = self.mask[li[:, 0], li[:, 1], li[:, 2]]
        return out

    def any(self) -> bool:
        return bool(self.mask.any())
