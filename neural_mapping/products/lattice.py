"""The global lattice the products share: cells, tiles, packed keys and observed boxes.

Cell ``i`` (integer, per axis) of size ``res`` spans ``[i * res, (i + 1) * res)``, so products
of the same map computed at the same resolution line up. Integer triples (cell or tile indices)
are packed into int64 keys to use them in sets, dicts and sorted arrays.
"""

from __future__ import annotations

import numpy as np

from neural_mapping.coverage import Coverage, VoxelMask

#: the 8 corners of a unit cube, (8, 3) int64 offsets in C order
CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.int64)
_KEY_BITS = 21
_KEY_OFF = 1 << (_KEY_BITS - 1)


def pack(idx: np.ndarray) -> np.ndarray:
    """int64 keys of integer triples (N, 3), each in [-2^20, 2^20)."""
    i = idx + _KEY_OFF
    return (i[:, 0] << (2 * _KEY_BITS)) | (i[:, 1] << _KEY_BITS) | i[:, 2]


def unpack(key: np.ndarray) -> np.ndarray:
    """The integer triples (N, 3) of keys made by :func:`pack`."""
    m = (1 << _KEY_BITS) - 1
    return np.stack([(key >> (2 * _KEY_BITS)) & m, (key >> _KEY_BITS) & m, key & m], 1) - _KEY_OFF


def grid_indices(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """All integer triples (N, 3) with lo <= idx <= hi (inclusive)."""
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 3), np.int64)
    g = np.meshgrid(*axes, indexing="ij")
    return np.stack([x.reshape(-1) for x in g], 1).astype(np.int64)


def centers(origin: np.ndarray, res: float, shape) -> np.ndarray:
    """(prod(shape), D) centres of the cells of a grid with lower corner ``origin`` (D,), in C order."""
    axes = [origin[i] + (np.arange(shape[i]) + 0.5) * res for i in range(len(shape))]
    g = np.meshgrid(*axes, indexing="ij")
    return np.stack([x.reshape(-1) for x in g], 1)


def lattice(lo: np.ndarray, hi: np.ndarray, res: float):
    """Origin (lower corner on the global lattice) and cell counts covering [lo, hi]."""
    i0 = np.floor(np.asarray(lo) / res + 1e-9).astype(np.int64)
    i1 = np.ceil(np.asarray(hi) / res - 1e-9).astype(np.int64)
    n = np.maximum(i1 - i0, 1)
    return i0 * res, n


def plane_cells(bounds, res: float):
    """The x, y cells of a horizontal slice over ``bounds`` (lo (3,), hi (3,)): (origin (2,),
    (H, W), centres (H*W, 2) as x, y with row = y, row 0 at min y)."""
    origin, n = lattice(bounds[0][:2], bounds[1][:2], res)
    H, W = int(n[1]), int(n[0])
    return origin, (H, W), centers(origin[::-1], res, (H, W))[:, ::-1]


def positive_resolution(resolution: float) -> float:
    """``resolution`` as a float; ValueError unless it is positive."""
    res = float(resolution)
    if not res > 0:
        raise ValueError(f"resolution must be positive, got {res}")
    return res


class ObservedBoxes:
    """O(1) 'does this box contain an observed voxel' tests through a 3D summed-area table.

    The observed mask is dilated by ``dilate`` coverage voxels first (a surface lies in an
    observed-surface voxel but the field just behind it is needed too); ``surface_only`` counts
    observed-surface voxels only.
    """

    def __init__(self, coverage: Coverage, dilate: int = 1, surface_only: bool = False) -> None:
        from scipy import ndimage

        m = coverage.surface_mask() if surface_only else coverage.observed_mask()
        mask = m.mask
        if dilate > 0 and mask.size:
            mask = np.pad(mask, dilate)
            mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool), iterations=dilate)
            self.origin = m.origin - dilate
        else:
            self.origin = m.origin
        self.voxel_m = coverage.voxel_m
        self.mask = mask
        sat = np.zeros(tuple(s + 1 for s in mask.shape), np.int32)
        if mask.size:
            sat[1:, 1:, 1:] = mask.astype(np.int32).cumsum(0).cumsum(1).cumsum(2)
        self.sat = sat

    def any_in_boxes(self, lo_W: np.ndarray, hi_W: np.ndarray) -> np.ndarray:
        """(N,) bool: an observed voxel overlaps box [lo, hi) (N, 3 each, metres)."""
        return self.count_in_boxes(lo_W, hi_W)[0] > 0

    def count_in_boxes(self, lo_W: np.ndarray, hi_W: np.ndarray):
        """((N,) observed voxels overlapping each box [lo, hi), (N,) voxels overlapping it)."""
        if self.mask.size == 0:
            return np.zeros(len(lo_W), np.int64), np.ones(len(lo_W), np.int64)
        shape = np.array(self.mask.shape)
        eps = 1e-9
        a = np.floor(lo_W / self.voxel_m + eps).astype(np.int64) - self.origin
        b = np.ceil(hi_W / self.voxel_m - eps).astype(np.int64) - self.origin  # exclusive
        a = np.clip(a, 0, shape)
        b = np.clip(b, 0, shape)
        S = self.sat
        x0, y0, z0 = a.T
        x1, y1, z1 = b.T
        tot = (S[x1, y1, z1] - S[x0, y1, z1] - S[x1, y0, z1] - S[x1, y1, z0]
               + S[x0, y0, z1] + S[x0, y1, z0] + S[x1, y0, z0] - S[x0, y0, z0])
        # voxels of the box, counting those outside the stored volume (never observed)
        full = np.prod(np.ceil(hi_W / self.voxel_m - eps).astype(np.int64)
                       - np.floor(lo_W / self.voxel_m + eps).astype(np.int64), axis=1)
        return np.where(np.all(b > a, axis=1), tot, 0), full

    def contains(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) bool: the point lies in an (dilated) observed voxel."""
        return VoxelMask(self.voxel_m, self.origin, self.mask).contains(pts_W)
