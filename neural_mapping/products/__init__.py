"""Map products for planning and people: mesh, 3D occupancy, 2D occupancy slice, ESDF slice.

Every product takes a map as a :class:`~neural_mapping.products.view.MapView` (a
:class:`~neural_mapping.mapper.Mapper`, or anything with the same members): its ``query``,
``coverage``, ``bounds()``, ``cfg``, and its ``lock``, held while a product is computed so that
it comes from one state of the weights.

Unknown stays unknown: every product is restricted to space that the coverage
record says some frame observed. Grids are aligned to a global lattice (cell
``i`` spans ``[i * res, (i + 1) * res)``) so products of the same map line up.

Modules: :mod:`.view` (the MapView protocol), :mod:`.query` (chunked field queries),
:mod:`.lattice` (grid and tile indices, observed boxes), :mod:`.mesh` and :mod:`.mesh_cache`
(incremental meshing), :mod:`.occupancy`, :mod:`.esdf`, :mod:`.export` (mesh and map files),
:mod:`.budget` (memory estimates, checked before a product is computed).
"""

from neural_mapping.products.budget import ProductTooLarge, check_product_memory, estimate_product_bytes
from neural_mapping.products.esdf import EsdfSlice, esdf_slice
from neural_mapping.products.export import read_occupancy_map, save_mesh, write_occupancy_map
from neural_mapping.products.mesh import MeshExtractor, MeshStats, extract_mesh
from neural_mapping.products.occupancy import (FREE_CELL, OCCUPIED_CELL, UNKNOWN_CELL, OccupancyGrid3D,
                                               OccupancySlice, occupancy_grid_3d, occupancy_slice_2d)
from neural_mapping.products.query import FieldSamples, query_field
from neural_mapping.products.view import MapView

__all__ = [
    "FieldSamples", "query_field", "MeshExtractor", "MeshStats", "extract_mesh", "save_mesh",
    "OccupancyGrid3D", "OccupancySlice", "EsdfSlice", "occupancy_grid_3d", "occupancy_slice_2d", "esdf_slice",
    "write_occupancy_map", "read_occupancy_map", "FREE_CELL", "OCCUPIED_CELL", "UNKNOWN_CELL", "MapView",
    "check_product_memory", "estimate_product_bytes", "ProductTooLarge",
]
