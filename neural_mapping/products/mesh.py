"""Mesh of the observed region: block-sparse marching cubes with an incremental tile cache."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from neural_mapping.products.lattice import CORNERS, ObservedBoxes, grid_indices, pack, unpack
from neural_mapping.products.mesh_cache import TileCache, TileMesh, field_version
from neural_mapping.products.query import query_field, values_at
from neural_mapping.products.view import MapView

_BUDGET_BATCH = 16  # tiles per batch of a time-budgeted extraction


@dataclass
class MeshStats:
    """What one extraction did (for logs and benchmarks)."""

    tiles_total: int = 0
    tiles_recomputed: int = 0
    points_queried: int = 0
    points_probed: int = 0  # of which spent on change probes of cached tiles
    tiles_pending: int = 0  # tiles that need recomputing but were left for later (budget)
    vertices: int = 0
    triangles: int = 0
    components_removed: int = 0


class MeshExtractor:
    """Block-sparse marching cubes over the observed region, with a per-tile cache.

    The map is cut into cubic tiles of ``tile_cells`` voxels on a global lattice. Inside the
    tiles an octree-like coarse-to-fine pass keeps only cells that overlap observed space
    (coverage dilated by one coverage voxel) and, for sdf maps, may hold the surface
    (|sdf(centre)| <= ``safety`` x half the cell diagonal), down to cells of 2 voxels; the
    field is then evaluated at the voxel corners of those cells (a dense (T+1)^3 grid per tile,
    filled sparsely) and marching cubes (skimage, Lewiner) runs per tile with a mask of their
    voxels. The work follows the surface area, not the volume.

    ``extract(full=False)`` recomputes only the tiles whose mesh may have changed since the
    previous extraction (:mod:`.mesh_cache`: tiles never computed, touched by coverage updates,
    or whose change probes moved by more than ``change_tol`` voxels when the field changed);
    the others keep their mesh (and vertex colours). Nerf maps (no distance to compare) are
    recomputed in full when the field changed. ``full=True`` recomputes all. Nerf maps mesh the
    occupancy = 0.5 level and are pruned by observed-surface voxels instead of the SDF test.
    """

    def __init__(self, mapper: MapView, voxel_m: float | None = None, tile_cells: int = 32, safety: float = 1.25,
                 min_component_triangles: int | None = None, color: bool | None = None,
                 snapshot: bool = True, change_tol: float = 0.25) -> None:
        if tile_cells < 1 or tile_cells & (tile_cells - 1):
            raise ValueError(f"tile_cells must be a power of two, got {tile_cells}")
        self.mapper = mapper
        mcfg = mapper.cfg.mesh
        self.voxel_m = float(voxel_m if voxel_m is not None else mcfg.voxel_m)
        if not self.voxel_m > 0:
            raise ValueError(f"mesh voxel must be positive, got {self.voxel_m}")
        self.tile_cells = int(tile_cells)
        # a fused prior (neural_mapping/sdf_prior.py) is a projective TSDF: along grazing rays it
        # over-states the distance, so the coarse-to-fine test needs a wider margin
        self.safety = max(float(safety), PRIOR_SAFETY) if _prior_of(mapper) is not None else float(safety)
        self.min_component_triangles = int(min_component_triangles if min_component_triangles is not None
                                           else mcfg.min_component_triangles)
        self.color = bool(color if color is not None else mcfg.color)
        #: mesh a copy of the map (``mapper.snapshot``, made under its lock) so training goes on
        #: meanwhile; without one (or for a map that is its own snapshot) mesh under the map's lock
        self.snapshot = bool(snapshot)
        if not change_tol > 0:
            raise ValueError(f"change_tol must be positive, got {change_tol}")
        self.change_tol = float(change_tol)
        self._cache = TileCache(self.voxel_m, self.tile_cells, self.safety, self.change_tol)
        self._copy: MapView | None = None  # the map's copy of the last extraction, refreshed by the next
        self.stats = MeshStats()

    # ------------------------------------------------------------------ public

    def extract(self, full: bool = False, budget_s: float | None = None):
        """The current mesh as an open3d.geometry.TriangleMesh (map frame, vertex colours);
        ``full`` and ``budget_s`` as in :meth:`extract_arrays`."""
        import open3d as o3d

        verts, faces, colors = self.extract_arrays(full=full, budget_s=budget_s)
        mesh = o3d.geometry.TriangleMesh()
        mesh.vertices = o3d.utility.Vector3dVector(verts.astype(np.float64))
        mesh.triangles = o3d.utility.Vector3iVector(faces.astype(np.int32))
        if colors is not None and len(colors):
            mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(colors, 0, 1).astype(np.float64))
        if len(faces):
            mesh.compute_vertex_normals()
        return mesh

    def extract_arrays(self, full: bool = False, budget_s: float | None = None):
        """(verts (V, 3) float64, faces (F, 3) int64, colors (V, 3) float32 | None).

        ``budget_s`` bounds the time of an incremental extraction (live publishing): tiles to
        recompute are taken in order of priority (newly observed first, then by how far their
        probes moved) in batches until the budget is spent (at least one batch); the others keep
        their previous mesh and are recomputed by the next extractions (``stats.tiles_pending``).
        """
        t_start = time.perf_counter()
        m, cache = self.mapper, self._cache
        stats = MeshStats()
        # what changed since the last extraction comes from the live coverage; the field is read
        # from a snapshot (a copy made under the lock) so training is not blocked while meshing
        src = m
        with m.lock:
            n_updates = int(m.coverage.n_updates)
            version = field_version(m)
            field_changed = version != cache.seen_field
            changed = m.coverage.changed_since(cache.seen_updates) if cache.seen_updates >= 0 else None
            if not full and cache.seen_updates == n_updates and not field_changed and not cache.pending \
                    and cache.kind == m.cfg.field.kind and cache.last is not None:
                self.stats = MeshStats(tiles_total=len(cache.tiles), vertices=len(cache.last[0]),
                                       triangles=len(cache.last[1]))
                return cache.last  # nothing observed since the last extraction: the cached mesh
            if self.snapshot:
                src = self._copy = m.snapshot(self._copy)
        with m.lock if src is m else contextlib.nullcontext():
            cov = src.coverage
            bounds = src.bounds()
            if bounds is None or cov.bounds() is None:
                cache.tiles.clear()
                cache.last = None
                self.stats = stats
                return np.zeros((0, 3)), np.zeros((0, 3), np.int64), None
            lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
            kind = src.cfg.field.kind
            v, T = self.voxel_m, self.tile_cells
            t_lo = np.floor(lo / (v * T)).astype(np.int64)
            t_hi = np.floor((hi - 1e-9) / (v * T)).astype(np.int64)
            all_tiles = grid_indices(t_lo, t_hi)  # (Nt, 3)
            boxes = ObservedBoxes(cov, dilate=1)
            tl, th = all_tiles * T * v, (all_tiles + 1) * T * v
            all_tiles = all_tiles[boxes.any_in_boxes(np.maximum(tl, lo), np.minimum(th, hi))]
            keys = pack(all_tiles).tolist()
            if full or kind != cache.kind or changed is None:
                dirty = all_tiles
                cache.tiles.clear()
            else:
                # the mesh mask is the coverage dilated by one voxel: grow changes by one voxel
                need = cache.tiles_touched(changed, all_tiles, cov.voxel_m)
                need |= np.array([k not in cache.tiles or k in cache.pending for k in keys], bool)
                score = np.where(need, np.inf, 0.0)  # newly observed or pending first
                if field_changed and kind != "sdf":  # no distances to probe: all of it may have moved
                    need[:] = True
                elif field_changed:
                    stats.points_probed = cache.probe(src, keys, need, score)
                    stats.points_queried += stats.points_probed
                order = np.argsort(-score[need], kind="stable")
                dirty = all_tiles[need][order]
            cache.keep_only(set(keys))
            stats.tiles_total = len(all_tiles)
            done = len(dirty)
            if budget_s is None or full:
                if len(dirty):
                    self._compute_tiles(src, dirty, boxes, stats)
            else:
                done = 0
                while done < len(dirty) and (done == 0 or time.perf_counter() - t_start < budget_s):
                    self._compute_tiles(src, dirty[done:done + _BUDGET_BATCH], boxes, stats)
                    done += len(dirty[done:done + _BUDGET_BATCH])
            cache.pending = set(pack(dirty[done:]).tolist()) if done < len(dirty) else set()
            stats.tiles_recomputed, stats.tiles_pending = done, len(dirty) - done
            cache.seen_updates, cache.seen_field, cache.kind = n_updates, version, kind
        verts, faces, colors = cache.merge(self.color)
        verts, faces, colors, removed = _remove_small_components(verts, faces, colors, self.min_component_triangles)
        stats.vertices, stats.triangles, stats.components_removed = len(verts), len(faces), removed
        self.stats = stats
        cache.last = (verts, faces, colors)
        return verts, faces, colors

    # ------------------------------------------------------------------ internals

    def _compute_tiles(self, m: MapView, tiles: np.ndarray, boxes: ObservedBoxes, stats: MeshStats) -> None:
        v, T = self.voxel_m, self.tile_cells
        is_sdf = m.cfg.field.kind == "sdf"
        surf_boxes = None if is_sdf else ObservedBoxes(m.coverage, dilate=1, surface_only=True)
        # ---- coarse to fine, down to cells of 2 voxels: cells of size s voxels with absolute
        # integer index c span voxels [c*s, (c+1)*s). Cells are not clipped to the bounds (only
        # tiles are), so a tile's mesh depends on the coverage alone and stays valid as bounds grow.
        cells = tiles.copy()
        cval = None  # sdf at the centres of the final cells (centres of 2-cells are voxel corners)
        s = T
        while True:
            c_lo = cells * s * v
            c_hi = (cells + 1) * s * v
            keep = boxes.any_in_boxes(c_lo, c_hi)
            if surf_boxes is not None:
                keep &= surf_boxes.any_in_boxes(c_lo, c_hi)
            cells = cells[keep]
            if is_sdf and len(cells):
                centers = (cells + 0.5) * s * v
                val = values_at(m, centers)
                stats.points_queried += len(centers)
                sel = np.abs(val) <= self._cache.keep_threshold(s)
                cells, cval = cells[sel], val[sel]
            if s <= 2 or len(cells) == 0:
                break
            cells = (cells[:, None, :] * 2 + CORNERS[None]).reshape(-1, 3)
            s //= 2
        self._cache.clear_computed(tiles)  # computed now; empty unless a surface is found below
        self._mesh_tiles(m, cells, s, cval, boxes, stats)
        if is_sdf:
            stats.points_queried += self._cache.set_probes(m, tiles)

    def _mesh_tiles(self, m: MapView, cells: np.ndarray, s: int, cval, boxes: ObservedBoxes,
                    stats: MeshStats) -> None:
        """Marching cubes over the voxels of the surviving cells (of ``s`` voxels), per tile."""
        from skimage.measure import marching_cubes

        v, T = self.voxel_m, self.tile_cells
        if len(cells) == 0:
            return
        # ---- the voxels of the surviving cells whose centres are observed (dilated coverage);
        # only cells on the border of the observed region need the per-voxel test
        sub = CORNERS if s == 2 else np.zeros((1, 3), np.int64)
        n_obs, n_all = boxes.count_in_boxes(cells * s * v, (cells + 1) * s * v)
        inner = n_obs == n_all
        vox_in = (cells[inner][:, None, :] * s + sub[None]).reshape(-1, 3)
        vox_b = (cells[~inner][:, None, :] * s + sub[None]).reshape(-1, 3)
        vox = np.vstack([vox_in, vox_b[boxes.contains((vox_b + 0.5) * v)]])
        if len(vox) == 0:
            return
        # ---- per tile: mark the corners the voxels need in a dense (T+1)^3 grid, query them all
        # at once (only tile faces are evaluated twice), then marching cubes with a voxel mask
        tile_of = np.floor_divide(vox, T)
        utk, tinv = np.unique(pack(tile_of), return_inverse=True)
        utiles = unpack(utk)
        local = vox - tile_of * T  # (M, 3) in [0, T)
        order = np.argsort(tinv, kind="stable")
        bounds_in_order = np.searchsorted(tinv[order], np.arange(len(utiles) + 1))
        # the centre of a 2-cell is the shared corner of its 8 voxels: its value is known already
        if cval is not None and s == 2:
            c_abs = cells * 2 + 1
            c_tile = np.floor_divide(c_abs, T)
            c_key = pack(c_tile)
            c_pos = np.minimum(np.searchsorted(utk, c_key), len(utk) - 1)
            ok = utk[c_pos] == c_key
            c_pos, c_loc, c_val = c_pos[ok], (c_abs - c_tile * T)[ok], cval[ok]
        else:
            c_pos = np.zeros(0, np.int64)
            c_loc, c_val = np.zeros((0, 3), np.int64), np.zeros(0, np.float32)
        off = _mc_mask_offset()
        prior = _prior_of(m)
        batch = max(1, (1 << 22) // (T + 1) ** 3)  # ~4 M grid points per batch bounds memory
        new_verts = []
        for start in range(0, len(utiles), batch):
            nb = min(batch, len(utiles) - start)
            rows = order[bounds_in_order[start]:bounds_in_order[start + nb]]
            slot = tinv[rows] - start
            loc = local[rows]
            need = np.zeros((nb, T + 1, T + 1, T + 1), bool)
            for c in CORNERS:
                need[slot, loc[:, 0] + c[0], loc[:, 1] + c[1], loc[:, 2] + c[2]] = True
            in_b = (c_pos >= start) & (c_pos < start + nb)
            cs, cl = c_pos[in_b] - start, c_loc[in_b]
            need[cs, cl[:, 0], cl[:, 1], cl[:, 2]] = False
            si, i, j, k = np.nonzero(need)
            pts = (utiles[start + si] * T + np.stack([i, j, k], 1)) * v
            vol = np.ones(need.shape, np.float32)
            vol[si, i, j, k] = values_at(m, pts)
            vol[cs, cl[:, 0], cl[:, 1], cl[:, 2]] = c_val[in_b]
            stats.points_queried += len(pts)
            del need, pts
            mask = np.zeros(vol.shape, bool)
            mask[slot, loc[:, 0] + off, loc[:, 1] + off, loc[:, 2] + off] = True
            for bi in range(nb):
                t = utiles[start + bi]
                try:
                    verts, faces, _, _ = marching_cubes(vol[bi], level=0.0, mask=mask[bi], allow_degenerate=False,
                                                        gradient_direction="descent")
                except (RuntimeError, ValueError):  # no crossing in this tile
                    continue
                verts_W = (verts.astype(np.float64) + t * T) * v
                faces = faces.astype(np.int64)
                if prior is not None:  # no sheet where fused and unfused prior voxels meet
                    faces = prior.consistent_faces(verts_W, faces)
                tm = TileMesh(verts_W, faces, None)
                self._cache.tiles[int(utk[start + bi])] = tm
                new_verts.append(tm)
        if self.color and new_verts:
            allv = np.vstack([tm.verts_W for tm in new_verts])
            col = query_field(m, allv, want_color=True).color
            stats.points_queried += len(allv)
            a = 0
            for tm in new_verts:
                tm.colors = col[a:a + len(tm.verts_W)] if col is not None else None
                a += len(tm.verts_W)


#: coarse-to-fine safety factor when the field carries a fused prior
PRIOR_SAFETY = 2.0


def _prior_of(m):
    """The fused SDF prior of a map's field, or None."""
    return getattr(getattr(m, "field", None), "prior", None)


_MC_MASK_OFFSET: int | None = None


def _mc_mask_offset() -> int:
    """Index shift between a cube's origin corner and the mask entry skimage checks for it.

    skimage's Lewiner marching cubes reads ``mask[x, y, z]`` for a cube whose origin is
    not documented; measured once on a tiny volume so any version works.
    """
    global _MC_MASK_OFFSET
    if _MC_MASK_OFFSET is None:
        from skimage.measure import marching_cubes

        vol = np.ones((4, 4, 4), np.float32)
        vol[1, 1, 1] = -1.0  # only the 8 cubes around vertex (1,1,1) cross the level
        for off in (0, 1):
            mask = np.zeros_like(vol, bool)
            mask[2 + off, 2 + off, 2 + off] = True  # cube with origin (2,2,2) does not touch (1,1,1)
            try:
                marching_cubes(vol, 0.0, mask=mask)
            except RuntimeError:
                _MC_MASK_OFFSET = off
                break
        else:  # pragma: no cover - an unknown convention
            raise RuntimeError("cannot determine skimage marching_cubes mask convention")
    return _MC_MASK_OFFSET


def _remove_small_components(verts, faces, colors, min_triangles: int):
    """Drop connected fragments with fewer than ``min_triangles`` triangles; reindex."""
    if min_triangles <= 0 or len(faces) == 0:
        return verts, faces, colors, 0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    g = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    n_comp, label = connected_components(g, directed=False)
    tri_count = np.bincount(label[faces[:, 0]], minlength=n_comp)
    keep_comp = tri_count >= min_triangles
    removed = int(np.count_nonzero(~keep_comp & (tri_count > 0)))
    keep_face = keep_comp[label[faces[:, 0]]]
    faces = faces[keep_face]
    used = np.zeros(n, bool)
    used[faces.reshape(-1)] = True
    remap = -np.ones(n, np.int64)
    remap[used] = np.arange(int(used.sum()))
    return verts[used], remap[faces], (colors[used] if colors is not None else None), removed


def extract_mesh(mapper: MapView, voxel_m: float | None = None, **kw):
    """Mesh of the observed region (open3d TriangleMesh); see :class:`MeshExtractor`."""
    return MeshExtractor(mapper, voxel_m=voxel_m, **kw).extract(full=True)
