"""One submap: a small field (a :class:`~neural_mapping.mapper.Mapper`) in its own local frame.

The submap's frame ``S`` is the map frame shifted by ``origin_W`` (``T_WS`` is a translation;
:meth:`~neural_mapping.submaps.grid.SubmapGrid.origin_W`). Frames reach it clipped to its grown
box (depth outside set to 0) and moved into ``S`` (:meth:`Submap.frame_for`); its mapper's bounds
and coverage are in ``S``. A submap is *active* (trained; keyframes and optimiser held) or
*frozen* (weights, bounds and coverage only; its mapper is never changed again: thawing builds a
new one, so a snapshot holding the frozen mapper stays valid). ``mapper`` is None while the
submap is spilled to disk (:mod:`neural_mapping.submaps.cache`).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from neural_mapping.camera import backproject_depth
from neural_mapping.frame import Frame
from neural_mapping.submaps.grid import SubmapGrid, submap_id


def mapper_nbytes(mapper) -> int:
    """Resident bytes of a mapper: field tensors, optimiser state, keyframe pixels, coverage blocks."""
    import torch

    n = sum(t.numel() * t.element_size() for t in mapper.field.state_dict().values())
    for st in mapper.optimizer.state.values():
        n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    n += int(getattr(mapper.keyframes, "nbytes", 0))
    cov = mapper.coverage
    n += cov.allocated_cells + cov.n_blocks * 8 * 4
    return int(n)


class Submap:
    """A cell's field and its metadata (see module doc)."""

    def __init__(self, key, grid: SubmapGrid, mapper=None, robot_id: str = "", version: int = 0,
                 frozen: bool = False) -> None:
        self.key = (int(key[0]), int(key[1]))
        self.id = submap_id(self.key)
        #: unique among all robots' submaps: the cache's key and the file stem (robot id made file-safe)
        self.name = self.id if not robot_id else re.sub(r"[^A-Za-z0-9_-]", "_", robot_id) + "." + self.id
        self.grid = grid
        self.origin_W = grid.origin_W(self.key)
        self.mapper = mapper
        self.robot_id = robot_id
        self.version = int(version)
        self.frozen = bool(frozen)
        self.nbytes = 0 if mapper is None else mapper_nbytes(mapper)
        self.bounds_W: tuple[np.ndarray, np.ndarray] | None = None  # kept while spilled
        self.refresh_bounds()

    # ------------------------------------------------------------------ frames

    def T_SW(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, 3] = -self.origin_W
        return T

    def to_local(self, pts_W: np.ndarray) -> np.ndarray:
        return np.asarray(pts_W, np.float64) - self.origin_W

    def frame_for(self, frame: Frame, stride: int = 1) -> Frame | None:
        """The frame in ``S`` with depth outside the grown box set to 0; None when nothing is left."""
        d = frame.depth_m
        H, W = d.shape
        K = frame.K
        v, u = np.mgrid[0:H, 0:W]
        z = d.astype(np.float64)
        rays = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)
        pts = rays @ frame.T_WC[:3, :3].T + frame.T_WC[:3, 3]
        keep = self.grid.in_grown_box(self.key, pts).reshape(H, W) & (d > 0)
        if not keep.any():
            return None
        depth = np.where(keep, d, 0).astype(np.float32)
        return replace(frame, depth_m=depth, T_WC=self.T_SW() @ frame.T_WC)

    # ------------------------------------------------------------------ state

    def refresh_bounds(self) -> None:
        """The mapper's bounds in the map frame (kept for when it is spilled)."""
        if self.mapper is None:
            return
        b = self.mapper.bounds()
        self.bounds_W = None if b is None else (b[0] + self.origin_W, b[1] + self.origin_W)

    def box_W(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The region this submap answers for: its bounds cut to its grown box (map frame)."""
        if self.bounds_W is None:
            return None
        glo, ghi = self.grid.grown_box(self.key)
        lo, hi = self.bounds_W[0].copy(), self.bounds_W[1].copy()
        lo[:2] = np.maximum(lo[:2], glo)
        hi[:2] = np.minimum(hi[:2], ghi)
        return (lo, hi) if np.all(hi > lo) else None

    def record(self) -> dict:
        """The metadata of the submap (the header fields of :func:`~neural_mapping.submaps.codec.encode_submap`)."""
        lo, hi = self.grid.cell_box(self.key)
        b = self.bounds_W
        return {"id": self.id, "key": list(self.key), "robot_id": self.robot_id, "version": self.version,
                "frame": "map", "origin_W": self.origin_W.tolist(), "grid": self.grid.as_dict(),
                "cell_lo": lo.tolist(), "cell_hi": hi.tolist(),
                "bounds_lo": None if b is None else b[0].tolist(), "bounds_hi": None if b is None else b[1].tolist()}

    def observed_points_W(self, frame: Frame, stride: int = 4) -> np.ndarray:
        """Depth points of a frame (every ``stride``-th pixel) in the map frame (helper for routing)."""
        return backproject_depth(frame.depth_m, frame.K, frame.T_WC, stride=stride)
