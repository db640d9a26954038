"""Submap coverages in the map frame: merged into one :class:`~neural_mapping.coverage.Coverage`.

A submap's coverage is in its local frame, whose origin lies on the coverage block lattice
(:meth:`~neural_mapping.submaps.grid.SubmapGrid.origin_W`), so it moves into the map frame by a
whole number of blocks and merges by OR-ing block flags. Merged blocks are stamped with a new
update count, so incremental products (the mesh's tile cache) see them as changed.

This module reads the Coverage's block pools directly (it is the one place outside
coverage.py that does): the merge is a block copy, never a per-voxel replay.
"""

from __future__ import annotations

import numpy as np

from neural_mapping.coverage import BLOCK, Coverage


def block_offset(origin_W: np.ndarray, voxel_m: float) -> np.ndarray:
    """(3,) int64 blocks between a submap's frame and the map frame; ValueError off the lattice."""
    b = np.asarray(origin_W, np.float64) / (voxel_m * BLOCK)
    r = np.round(b)
    if np.abs(b - r).max() > 1e-6:
        raise ValueError(f"submap origin {origin_W} is not on the coverage block lattice ({voxel_m * BLOCK} m)")
    return r.astype(np.int64)


def merge_into(dst: Coverage, src: Coverage, origin_W: np.ndarray) -> int:
    """OR the observed flags of ``src`` (in a frame whose origin in ``dst``'s is ``origin_W``) into
    ``dst``; returns the blocks merged. Both must have the same voxel size."""
    if abs(dst.voxel_m - src.voxel_m) > 1e-12:
        raise ValueError(f"coverage voxel sizes differ: {dst.voxel_m} vs {src.voxel_m}")
    n = src.n_blocks
    if n == 0:
        return 0
    keys = src._keys[:n] + block_offset(origin_W, dst.voxel_m)
    dst.n_updates += 1
    slots = dst._slots(keys, create=True)
    dst._pool[slots] |= src._pool[:n]
    dst._stamps[slots] = dst.n_updates
    dst._bounds_valid = False
    return n


def union_coverage(parts, voxel_m: float) -> Coverage:
    """A new Coverage (map frame) of ``parts``: iterable of (coverage, origin_W)."""
    out = Coverage(voxel_m=voxel_m)
    for cov, origin in parts:
        merge_into(out, cov, origin)
    return out
