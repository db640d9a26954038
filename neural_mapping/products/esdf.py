"""ESDF slice: signed distance to the nearest surface over a horizontal plane, for planners."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neural_mapping.products.lattice import ObservedBoxes, lattice, plane_cells, positive_resolution
from neural_mapping.products.occupancy import OCCUPIED_CELL, occupancy_grid_3d
from neural_mapping.products.query import query_field
from neural_mapping.products.view import MapView


@dataclass
class EsdfSlice:
    """Signed distance (m) per cell at height ``z``; NaN where unknown; row 0 at min y."""

    distance: np.ndarray  # (H, W) float32
    origin_xy: np.ndarray  # (2,) lower-left corner of cell (0, 0)
    resolution: float
    z: float
    gradient: np.ndarray | None = None  # (H, W, 3) float32, NaN where unknown

    @property
    def known(self) -> np.ndarray:
        return np.isfinite(self.distance)


def esdf_slice(view: MapView, z: float, resolution: float, want_gradient: bool = False) -> EsdfSlice:
    """Signed distance to the nearest surface at height ``z`` for every known cell.

    For sdf maps the field itself is the distance (its gradient analytic). For nerf maps
    the distance is a Euclidean distance transform of the 3D occupancy around the slice
    (positive in free cells, negative inside occupied ones), gradient by central
    differences. Unknown cells are NaN.
    """
    res = positive_resolution(resolution)
    with view.lock:
        b = view.bounds()
        if b is None:
            return EsdfSlice(np.zeros((0, 0), np.float32), np.zeros(2), res, float(z))
        origin, (H, W), xy = plane_cells(b, res)
        boxes = ObservedBoxes(view.coverage, dilate=1)
        pts = np.column_stack([xy, np.full(len(xy), float(z))])
        known = boxes.contains(pts)
        dist = np.full(len(pts), np.nan, np.float32)
        grad = np.full((len(pts), 3), np.nan, np.float32) if want_gradient else None
        if view.cfg.field.kind == "sdf":
            idx = np.flatnonzero(known)
            r = query_field(view, pts[idx], want_gradient=want_gradient)
            dist[idx] = r.sdf
            if want_gradient:
                grad[idx] = r.gradient
        else:
            dist, grad = _esdf_from_occupancy(view, origin, (W, H), res, float(z), known, want_gradient)
    return EsdfSlice(dist.reshape(H, W), origin.astype(np.float64), res, float(z),
                     grad.reshape(H, W, 3) if grad is not None else None)


def _esdf_from_occupancy(view: MapView, origin_xy, n_xy, res, z, known, want_gradient):
    """Distance transform of a 3D occupancy grid (whole bounds) sampled at height z."""
    from scipy import ndimage

    b = view.bounds()
    o3, n3 = lattice(np.array([origin_xy[0], origin_xy[1], b[0][2]]),
                     np.array([origin_xy[0] + n_xy[0] * res, origin_xy[1] + n_xy[1] * res, b[1][2]]), res)
    grid = occupancy_grid_3d(view, res, bounds=(o3, o3 + n3 * res))
    occ = grid.data == OCCUPIED_CELL
    d_out = ndimage.distance_transform_edt(~occ, sampling=res) if occ.any() else np.full(occ.shape, np.inf)
    d_in = ndimage.distance_transform_edt(occ, sampling=res) if occ.any() else np.zeros(occ.shape)
    sdf3 = np.where(occ, -d_in, d_out).astype(np.float32)  # (X, Y, Z), (x, y) aligned with the slice
    # linear interpolation between the two voxel layers whose centres bracket z
    fz = np.clip((z - grid.origin[2]) / res - 0.5, 0, sdf3.shape[2] - 1)
    k0 = int(np.floor(fz))
    k1 = min(k0 + 1, sdf3.shape[2] - 1)
    w = float(fz - k0)

    def at_z(vol):  # (X, Y, Z) -> (H*W,) with row = y
        return ((1 - w) * vol[:, :, k0] + w * vol[:, :, k1]).T.reshape(-1)

    sl = at_z(sdf3).astype(np.float32)
    sl[~known] = np.nan
    grad = None
    if want_gradient:
        gx, gy, gz = np.gradient(sdf3, res)
        grad = np.stack([at_z(g) for g in (gx, gy, gz)], 1).astype(np.float32)
        grad[~known] = np.nan
    return sl, grad
