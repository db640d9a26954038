"""Memory estimates of the products, checked before computing one.

A mesh at 0.1 mm or an occupancy slice at 1 mm over a room needs tens of gigabytes: computing it
ends in a MemoryError traceback or the OOM killer. :func:`check_product_memory` estimates the
peak memory of a product from the map's observed region (cells over it at the asked resolution
times the bytes each cell costs in the product's arrays, plus the observed-voxel boxes every
product builds over the coverage) and raises :class:`ProductTooLarge` with a one-line message
when the estimate exceeds the budget (default :data:`DEFAULT_BUDGET_BYTES`). The command line
turns it into exit code 2; the node's services can call the same function and answer
``success: false`` with the message.

The byte counts per cell are measured peaks of the current code (numpy temporaries included),
rounded up; the estimate is meant to be within a small factor, enough to tell 200 MB from 20 GB.
"""

from __future__ import annotations

import math

import numpy as np

from neural_mapping.products.view import MapView

#: default budget of one product's peak memory (bytes)
DEFAULT_BUDGET_BYTES = 2 * 1024 ** 3
#: bytes per cell of a 2D grid (centres, sample points, observed-box tests, field query) besides
#: the per-height states of an occupancy slice (one byte per height and cell)
_SLICE_CELL_BYTES = 400
#: bytes per cell of a 3D occupancy grid (centres, observed-box tests, field query)
_GRID_CELL_BYTES = 250
#: bytes per cell of the observed-voxel boxes (mask, dilation, summed-area table and its cumsums)
_BOX_VOXEL_BYTES = 32
#: mesh: bytes per tile of the tile lattice over the bounds, per vertex of the final mesh (field
#: queries of the cells near it, tile meshes, the merge), and the field queries' batches
_TILE_BYTES = 256
_VERTEX_BYTES = 350
_MESH_BASE_BYTES = 256 * 1024 ** 2

PRODUCTS = ("mesh", "occupancy_2d", "occupancy_3d", "esdf")


class ProductTooLarge(ValueError):
    """A product whose estimated memory exceeds the budget; the message says what to change."""


def _cells(lo: np.ndarray, hi: np.ndarray, res: float) -> float:
    return float(np.prod(np.maximum(np.ceil((np.asarray(hi) - np.asarray(lo)) / res), 1.0)))


def coverage_box_voxels(view: MapView) -> float:
    """Voxels of the box spanning the coverage's allocated blocks (the products' observed boxes)."""
    from neural_mapping.coverage import BLOCK

    idx = view.coverage.block_indices()
    if len(idx) == 0:
        return 0.0
    return float(np.prod((idx.max(0) - idx.min(0) + 1).astype(np.float64) * BLOCK))


def estimate_product_bytes(view: MapView, product: str, resolution: float, z_min: float | None = None,
                           z_max: float | None = None) -> int:
    """Estimated peak bytes of ``product`` (one of :data:`PRODUCTS`) at ``resolution`` (m: mesh
    voxel, occupancy cell or ESDF cell) over the map's observed region; 0 for an empty map.
    ``z_min``/``z_max``: the height band of ``occupancy_2d`` (default the map's config)."""
    if product not in PRODUCTS:
        raise ValueError(f"product must be one of {PRODUCTS}, got {product!r}")
    res = float(resolution)
    if not (res > 0 and math.isfinite(res)):
        raise ValueError(f"resolution must be positive, got {resolution}")
    b = view.bounds()
    if b is None:
        return 0
    lo, hi = (np.asarray(x, dtype=np.float64) for x in b)
    boxes = coverage_box_voxels(view) * _BOX_VOXEL_BYTES
    if product == "mesh":
        tiles = _cells(lo, hi, res * 32)  # MeshExtractor's default tile of 32 voxels
        # the surface area: at least the observed region's box (a room: its walls, floor and
        # ceiling), or the observed-surface voxels' faces when they say more (clutter); about one
        # vertex per mesh voxel of area (measured on the synthetic room: 0.55 GB at 1 cm)
        ext = hi - lo
        area = max(2.0 * (ext[0] * ext[1] + ext[1] * ext[2] + ext[0] * ext[2]),
                   view.coverage.n_surface * view.coverage.voxel_m ** 2)
        verts = area / res ** 2
        return int(_MESH_BASE_BYTES + boxes + tiles * _TILE_BYTES + verts * _VERTEX_BYTES)
    if product == "occupancy_3d":
        return int(boxes + _cells(lo, hi, res) * _GRID_CELL_BYTES)
    plane = _cells(lo[:2], hi[:2], res)
    if product == "esdf":
        if view.cfg.field.kind != "sdf":  # a 3D occupancy grid and its distance transforms
            return int(boxes + _cells(lo, hi, res) * (_GRID_CELL_BYTES + 32) + plane * _SLICE_CELL_BYTES)
        return int(boxes + plane * _SLICE_CELL_BYTES)
    oc = view.cfg.occupancy
    z0 = oc.z_min if z_min is None else float(z_min)
    z1 = oc.z_max if z_max is None else float(z_max)
    heights = max(1, int(math.ceil(max(z1 - z0, 0.0) / res))) + 1
    return int(boxes + plane * (_SLICE_CELL_BYTES + heights))


def check_product_memory(view: MapView, product: str, resolution: float, budget_bytes: float | None = None,
                         **band) -> int:
    """The estimate of :func:`estimate_product_bytes`; :class:`ProductTooLarge` (a ValueError with
    a one-line message naming the product, the resolution, the estimate and the budget) when it
    exceeds ``budget_bytes`` (default :data:`DEFAULT_BUDGET_BYTES`)."""
    budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else float(budget_bytes)
    need = estimate_product_bytes(view, product, resolution, **band)
    if need > budget:
        b = view.bounds()
        size = "x".join(f"{x:.3g}" for x in np.asarray(b[1]) - np.asarray(b[0]))
        raise ProductTooLarge(f"{product} at {resolution:g} m over the observed region ({size} m) needs about "
                              f"{_gb(need)} of memory, over the budget of {_gb(budget)}: use a coarser resolution "
                              f"or a larger budget")
    return need


def _gb(n: float) -> str:
    return f"{n / 1024 ** 3:.3g} GB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.3g} MB"
