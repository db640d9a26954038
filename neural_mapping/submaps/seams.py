"""How well submaps join: the fraction of a mesh's area that has a second sheet close by.

A double wall at a submap border (two submaps each putting their own surface a little apart)
shows as a triangle from whose centroid a ray along the normal (either way) meets another surface
within ``within_m``. The ray starts ``min_offset_m`` off the triangle (so the triangle's own sheet
and its marching-cubes steps are not counted); a thin object (a 6 cm slab) is not a second sheet
within 2 cm. :func:`double_sheet_fraction` measures it over the whole mesh (issue 16's target:
< 1 % within 2 cm).
"""

from __future__ import annotations

import numpy as np


def double_sheet_fraction(verts: np.ndarray, faces: np.ndarray, within_m: float = 0.02,
                          min_offset_m: float = 0.003, where=None) -> float:
    """Area fraction (0..1) of triangles (F, 3) over vertices (V, 3) with another surface within
    ``within_m`` along their normal, either side (see module doc). ``where``: a function of the
    triangles' centroids (F, 3) -> (F,) bool restricting the triangles counted (numerator and
    denominator), e.g. :func:`border_zone`."""
    doubled, area, cen = double_sheet_faces(verts, faces, within_m, min_offset_m)
    sel = np.ones(len(area), bool) if where is None else np.asarray(where(cen), bool)
    total = area[sel].sum()
    return float(area[sel & doubled].sum() / total) if total > 0 else 0.0


def border_zone(grid):
    """A ``where`` for :func:`double_sheet_fraction`: points within ``overlap_m`` (at least 5 cm) of a
    cell border in x or y, where neighbouring submaps are blended."""
    w = max(grid.overlap_m, 0.05)

    def inside(pts):
        r = np.mod(np.asarray(pts)[:, :2] + grid.size_m / 2, grid.size_m)  # cells are centred on the origin
        return np.any(np.minimum(r, grid.size_m - r) < w, axis=1)

    return inside


def double_sheet_faces(verts: np.ndarray, faces: np.ndarray, within_m: float = 0.02, min_offset_m: float = 0.003):
    """(doubled (F,) bool, area (F,), centroids (F, 3)) of the triangles (see module doc)."""
    import open3d as o3d

    v = np.asarray(verts, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        return np.zeros(0, bool), np.zeros(0), np.zeros((0, 3))
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cr = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cr, axis=1)
    ok = area > 1e-12
    n = np.zeros_like(cr)
    n[ok] = cr[ok] / (2 * area[ok, None])
    cen = (a + b + c) / 3.0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    doubled = np.zeros(len(f), bool)
    for sign in (1.0, -1.0):
        d = sign * n
        rays = np.concatenate([cen + d * min_offset_m, d], 1).astype(np.float32)
        t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        doubled |= ok & (t <= within_m - min_offset_m)
    return doubled, area, cen
