"""Occupancy for planning: 3D voxels and a 2D slice over a height band.

Unknown stays unknown: a cell is known only where it overlaps a voxel that the coverage record
says some frame observed. Grids lie on the global lattice (:mod:`.lattice`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neural_mapping.products.lattice import ObservedBoxes, centers, lattice, plane_cells, positive_resolution
from neural_mapping.products.query import query_field, surface_value
from neural_mapping.products.view import MapView

FREE_CELL = 0
OCCUPIED_CELL = 100
UNKNOWN_CELL = -1


@dataclass
class OccupancyGrid3D:
    """Voxels of the map frame: 100 occupied, 0 free, -1 unknown."""

    data: np.ndarray  # (X, Y, Z) int8
    origin: np.ndarray  # (3,) float64 lower corner of voxel [0, 0, 0], map frame
    resolution: float

    def centers(self) -> np.ndarray:
        """(X*Y*Z, 3) voxel centres in the map frame, in data's C order."""
        return centers(self.origin, self.resolution, self.data.shape)

    def state_at(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) int8 state of the voxels holding the points; -1 outside the grid."""
        idx = np.floor((np.asarray(pts_W) - self.origin) / self.resolution + 1e-9).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array(self.data.shape)), axis=1)
        out = np.full(len(idx), UNKNOWN_CELL, np.int8)
        out[ok] = self.data[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out


@dataclass
class OccupancySlice:
    """2D occupancy as nav_msgs/OccupancyGrid expects: row-major, row 0 at min y."""

    data: np.ndarray  # (H, W) int8: 0 free, 100 occupied, -1 unknown; data[row=y, col=x]
    origin_xy: np.ndarray  # (2,) lower-left corner of cell (0, 0), map frame (m)
    resolution: float  # m per cell
    z_min: float = 0.0
    z_max: float = 0.0

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    @property
    def width(self) -> int:
        return int(self.data.shape[1])


def _classify(view: MapView, pts_W: np.ndarray, res: float, seen: ObservedBoxes, chunk: int = 1 << 18) -> np.ndarray:
    """(N,) int8 cell state for cell centres (N, 3) of size ``res``.

    Known only where the cell overlaps an observed coverage voxel; there occupied when the
    surface touches the cell or the cell is inside (distance <= occupied_sdf_m + res/2: cells
    whose centre is exactly half a cell from an axis-aligned surface touch it and count), else
    free. The distance of an sdf map is the first-order distance sdf / |grad sdf| where the
    gradient norm exceeds 1: a learned sdf is not an exact unit-gradient distance, and where it
    is steeper this corrects its scale near surfaces (synthetic room: IoU 0.87 -> 0.90, same
    precision). A norm below 1 is left alone (it also occurs on the medial axis, at concave
    corners, where dividing would push cells that touch two walls out): the correction only
    ever brings a cell closer to the surface, never frees one.
    """
    thr = float(view.cfg.occupancy.occupied_sdf_m) + 0.5 * res + 1e-6
    out = np.full(len(pts_W), UNKNOWN_CELL, np.int8)
    h = 0.5 * res * (1 - 1e-6)  # the cell's box, a hair inside its faces
    idx = np.flatnonzero(seen.any_in_boxes(pts_W - h, pts_W + h))
    if len(idx) == 0:
        return out
    is_sdf = view.cfg.field.kind == "sdf"
    r = query_field(view, pts_W[idx], want_gradient=is_sdf, chunk=chunk)
    if is_sdf:
        gn = np.linalg.norm(r.gradient, axis=1) if r.gradient is not None else np.ones(len(idx))
        gn = np.where(np.isfinite(gn), gn, 1.0)  # a map that gives no gradient: its sdf as it is
        occ = r.sdf / np.maximum(gn, 1.0) <= thr
    else:
        occ = surface_value(view, r) <= 0  # occupancy probability of the density >= 0.5
    out[idx] = np.where(occ, OCCUPIED_CELL, FREE_CELL).astype(np.int8)
    return out


def occupancy_grid_3d(view: MapView, resolution: float | None = None, bounds=None) -> OccupancyGrid3D:
    """3D voxels occupied / free / unknown at ``resolution`` (default cfg.occupancy.resolution_m).

    Known only where the voxel overlaps an observed coverage voxel (unknown stays unknown:
    nothing is decided in space no frame saw). Known voxels are occupied when
    the field puts the centre within half a voxel of the surface or inside it
    (sdf <= occupancy.occupied_sdf_m + res/2; occupancy >= 0.5 for nerf maps), else free.
    """
    res = float(resolution if resolution is not None else view.cfg.occupancy.resolution_m)
    with view.lock:
        b = bounds if bounds is not None else view.bounds()
        if b is None:
            return OccupancyGrid3D(np.full((0, 0, 0), UNKNOWN_CELL, np.int8), np.zeros(3), res)
        origin, n = lattice(b[0], b[1], res)
        seen = ObservedBoxes(view.coverage, dilate=0)
        data = _classify(view, centers(origin, res, tuple(n)), res, seen).reshape(tuple(n))
    return OccupancyGrid3D(data, origin, res)


def band_heights(z_min: float, z_max: float, res: float) -> np.ndarray:
    """Sample heights covering [z_min, z_max] at most ``res`` apart (both ends included)."""
    if not z_max > z_min:
        raise ValueError(f"z_max ({z_max}) must exceed z_min ({z_min})")
    k = max(1, int(math.ceil((z_max - z_min) / res)))
    return z_min + (z_max - z_min) * np.arange(k + 1) / k


def occupancy_slice_2d(view: MapView, z_min: float, z_max: float, resolution: float) -> OccupancySlice:
    """2D occupancy over the height band [z_min, z_max].

    Each cell's column is sampled at heights at most ``resolution`` apart. Occupied (100)
    if any sample is occupied; free (0) if every sample is observed and free; unknown (-1)
    otherwise — a column is only declared free when all of it was seen.
    """
    res = positive_resolution(resolution)
    zs = band_heights(float(z_min), float(z_max), res)
    with view.lock:
        b = view.bounds()
        if b is None:
            return OccupancySlice(np.zeros((0, 0), np.int8), np.zeros(2), res, z_min, z_max)
        origin, (H, W), xy = plane_cells(b, res)
        seen = ObservedBoxes(view.coverage, dilate=0)
        states = np.empty((len(zs), len(xy)), np.int8)
        for i, z in enumerate(zs):
            pts = np.column_stack([xy, np.full(len(xy), z)])
            states[i] = _classify(view, pts, res, seen)
    occ = (states == OCCUPIED_CELL).any(0)
    free = (states == FREE_CELL).all(0)
    data = np.where(occ, OCCUPIED_CELL, np.where(free, FREE_CELL, UNKNOWN_CELL)).astype(np.int8)
    return OccupancySlice(data.reshape(H, W), origin.astype(np.float64), res, float(z_min), float(z_max))
