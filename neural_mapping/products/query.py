"""Field queries for products: any number of points in bounded memory, and the surface value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neural_mapping.products.view import FieldQuery, MapView


@dataclass
class FieldSamples:
    """Field values at N points (numpy)."""

    sdf: np.ndarray  # (N,) float32: signed distance (m) for sdf maps, density for nerf maps
    occupancy: np.ndarray  # (N,) float32 in [0, 1]; 0.5 where not observed
    gradient: np.ndarray | None = None  # (N, 3) float32
    color: np.ndarray | None = None  # (N, 3) float32 in [0, 1]


def query_field(view: MapView, pts_W: np.ndarray, want_gradient: bool = False, want_color: bool = False,
                chunk: int = 1 << 18) -> FieldSamples:
    """Query any number of points (N, 3) in chunks, with bounded working memory.

    Outputs are preallocated float32 arrays; each chunk is converted and copied in,
    so the extra memory is that of one chunk. The map's lock is held for the
    whole call, so all answers come from one snapshot of the weights.
    """
    pts_W = np.asarray(pts_W)
    if pts_W.ndim != 2 or pts_W.shape[1] != 3:
        raise ValueError(f"points must be an (N, 3) array, got shape {pts_W.shape}")
    n = len(pts_W)
    out = FieldSamples(
        sdf=np.empty(n, np.float32),
        occupancy=np.empty(n, np.float32),
        gradient=np.empty((n, 3), np.float32) if want_gradient else None,
        color=np.empty((n, 3), np.float32) if want_color else None,
    )
    chunk = max(1, int(chunk))
    with view.lock:
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            # a private writable float32 copy of the chunk (inputs may be read-only memory maps)
            r = view.query(np.array(pts_W[a:b], dtype=np.float32, copy=True), want_gradient=want_gradient,
                           want_color=want_color, chunk=chunk)
            out.sdf[a:b] = r.sdf
            out.occupancy[a:b] = r.occupancy
            if want_gradient:
                out.gradient[a:b] = r.gradient
            if want_color:
                out.color[a:b] = r.color
    return out


def surface_value(view: MapView, r: FieldQuery) -> np.ndarray:
    """A value that is negative inside and positive outside, zero on the surface.

    sdf maps: the sdf. nerf maps: 0.5 - occupancy probability of the density, computed from
    the raw density with ``view.occupancy_from_value`` (the query's ``occupancy`` is 0.5 in
    unobserved space, which would put a level set on the border of the observed region).
    """
    if view.cfg.field.kind == "sdf":
        return np.asarray(r.sdf, dtype=np.float32)
    occ = view.occupancy_from_value(np.asarray(r.sdf))
    return (0.5 - np.asarray(occ, dtype=np.float32)).astype(np.float32)


def values_at(view: MapView, pts_W: np.ndarray) -> np.ndarray:
    """Surface value (N,) float32 at points (N, 3) (see :func:`surface_value`)."""
    if len(pts_W) == 0:
        return np.zeros(0, np.float32)
    return surface_value(view, query_field(view, pts_W))
