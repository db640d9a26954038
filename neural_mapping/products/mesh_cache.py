"""The tile cache of incremental meshing: per-tile meshes and the probes that tell which moved.

A :class:`~neural_mapping.products.mesh.MeshExtractor` keeps the mesh of every tile it computed.
Before an incremental extraction the cache says which tiles must be recomputed: tiles never
computed, tiles touched by coverage updates, and, when the field itself changed (training steps,
a new field), tiles whose change probes moved. The probes of a tile are its coarse cell centres
(the first ``_PROBE_LEVELS`` levels of the extractor's coarse-to-fine pass) and up to
``_PROBE_VERTS`` of its vertices, with the field's values there when the tile was computed: a
tile is recomputed when a vertex value, or the value at a coarse centre that was or now is near
a surface (within the pruning threshold of its cell), moved by more than ``change_tol`` voxels:
a surface moved, appeared or vanished. Tiles whose probes did not move keep their mesh (and
vertex colours), so the live mesh lags the field by at most about ``change_tol`` voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from neural_mapping.coverage import VoxelMask
from neural_mapping.products.lattice import CORNERS, pack
from neural_mapping.products.query import values_at
from neural_mapping.products.view import MapView

_PROBE_VERTS = 128  # vertices per tile whose field value is re-checked for changes
_PROBE_LEVELS = 3  # coarse levels (tile, 1/2, 1/4 tile) whose cell centres are re-checked


def field_version(view: MapView):
    """What identifies the state of a map's field: the field object and its training steps."""
    return (id(view.field), view.stats.steps)


@dataclass
class TileMesh:
    verts_W: np.ndarray  # (V, 3) float64 map frame
    faces: np.ndarray  # (F, 3) int64 into verts_W
    colors: np.ndarray | None  # (V, 3) float32
    #: change probes (sdf maps): points (P, 3) — the tile's coarse cell centres, then up to
    #: _PROBE_VERTS of its vertices — and the field's values there when the tile was computed
    probe_pts: np.ndarray | None = None
    probe_vals: np.ndarray | None = None


class TileCache:
    """Meshes of tiles (by packed tile index) and what the map was when they were computed.

    Tiles are cubes of ``tile_cells`` voxels of ``voxel_m`` on the global lattice; ``safety``
    scales the coarse-to-fine pruning threshold (:meth:`keep_threshold`), ``change_tol`` (voxels)
    is how far a probe may move before its tile is recomputed (see the module doc).
    """

    def __init__(self, voxel_m: float, tile_cells: int, safety: float, change_tol: float) -> None:
        self.voxel_m, self.tile_cells, self.safety, self.change_tol = voxel_m, tile_cells, safety, change_tol
        #: cell sizes (voxels) of the coarse levels whose centres are change probes
        self.probe_sizes = [tile_cells >> k for k in range(min(_PROBE_LEVELS, tile_cells.bit_length()))]
        self.tiles: dict[int, TileMesh] = {}
        self.pending: set[int] = set()  # keys of tiles left to recompute by a budgeted extraction
        self.seen_updates = -1  # the coverage's n_updates at the last extraction
        self.seen_field = None  # field_version of the map at the last extraction
        self.kind: str | None = None  # the map's field kind at the last extraction
        self.last: tuple | None = None  # the last result (verts, faces, colors)

    def keep_threshold(self, s: int) -> float:
        """Coarse-to-fine pruning: a cell of ``s`` voxels may hold the surface when |sdf| at its
        centre is at most this (``safety`` x half its diagonal)."""
        return self.safety * 0.5 * math.sqrt(3.0) * s * self.voxel_m

    def clear_computed(self, tiles: np.ndarray) -> None:
        """Mark tiles (N, 3) computed with no surface (until meshes are put in for them)."""
        for k in pack(tiles).tolist():
            self.tiles[k] = TileMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32))

    def keep_only(self, keys: set[int]) -> None:
        """Forget the tiles not in ``keys`` (they no longer overlap observed space)."""
        for k in list(self.tiles):
            if k not in keys:
                del self.tiles[k]

    # ------------------------------------------------------------------ change probes

    def _probe_points(self, tiles: np.ndarray, meshes: list) -> tuple[np.ndarray, np.ndarray]:
        """Probe points of tiles (N, 3) with their meshes: (points (P, 3), tile of each (P,))."""
        v, T = self.voxel_m, self.tile_cells
        pts, owner = [], []
        cells = np.zeros((1, 3), np.int64)
        for s in self.probe_sizes:
            c = (tiles[:, None, :] * (T // s) + cells[None]).reshape(-1, 3)
            pts.append((c + 0.5) * s * v)
            owner.append(np.repeat(np.arange(len(tiles)), len(cells)))
            cells = (cells[:, None, :] * 2 + CORNERS[None]).reshape(-1, 3)
        for i, tm in enumerate(meshes):
            if tm is not None and len(tm.verts_W):
                step = max(1, len(tm.verts_W) // _PROBE_VERTS)
                pv = tm.verts_W[::step][:_PROBE_VERTS]
                pts.append(pv)
                owner.append(np.full(len(pv), i))
        return np.vstack(pts), np.concatenate(owner)

    def _coarse_thresholds(self) -> np.ndarray:
        """Pruning threshold of each coarse probe of one tile, in probe order."""
        return np.concatenate([np.full(8 ** k, self.keep_threshold(s)) for k, s in enumerate(self.probe_sizes)])

    def set_probes(self, view: MapView, tiles: np.ndarray) -> int:
        """Record the change probes of freshly computed tiles (sdf maps); returns the points queried."""
        keys = pack(tiles).tolist()
        meshes = [self.tiles[k] for k in keys]
        pts, owner = self._probe_points(tiles, meshes)
        vals = values_at(view, pts)
        order = np.argsort(owner, kind="stable")
        cuts = np.searchsorted(owner[order], np.arange(len(tiles) + 1))
        for i, tm in enumerate(meshes):
            sel = order[cuts[i]:cuts[i + 1]]
            tm.probe_pts, tm.probe_vals = pts[sel], vals[sel]
        return len(pts)

    def probe(self, view: MapView, keys: list, need: np.ndarray, score: np.ndarray) -> int:
        """Mark in ``need`` (in place) the cached tiles (``keys``: their packed indices) whose field
        moved (see the module doc), with their largest move in ``score``; returns the points queried."""
        idx = [i for i, k in enumerate(keys)
               if not need[i] and self.tiles.get(k) is not None and self.tiles[k].probe_pts is not None]
        if not idx:
            return 0
        tms = [self.tiles[keys[i]] for i in idx]
        pts = np.vstack([tm.probe_pts for tm in tms])
        old = np.concatenate([tm.probe_vals for tm in tms])
        cuts = np.cumsum([0] + [len(tm.probe_pts) for tm in tms])
        new = values_at(view, pts)
        thr = self._coarse_thresholds()
        tol = self.change_tol * self.voxel_m
        for j, (i, tm) in enumerate(zip(idx, tms)):
            o, n = old[cuts[j]:cuts[j + 1]], new[cuts[j]:cuts[j + 1]]
            near = np.minimum(np.abs(n), np.abs(o)) <= np.concatenate([thr, np.full(len(n) - len(thr), np.inf)])
            d = np.abs(n - o)[near]
            score[i] = float(d.max()) if len(d) else 0.0
            need[i] = score[i] > tol
        return len(pts)

    def tiles_touched(self, changed: VoxelMask, tiles: np.ndarray, margin_m: float) -> np.ndarray:
        """(Nt,) bool: tiles overlapping a changed cell of ``changed`` grown by ``margin_m``."""
        if not changed.mask.any() or len(tiles) == 0:
            return np.zeros(len(tiles), bool)
        idx = np.argwhere(changed.mask) + changed.origin  # (M, 3) changed cells (coverage blocks)
        cv = changed.voxel_m
        tile_m = self.tile_cells * self.voxel_m
        lo_t = np.floor((idx * cv - margin_m) / tile_m).astype(np.int64)
        hi_t = np.floor(((idx + 1) * cv + margin_m - 1e-9) / tile_m).astype(np.int64)
        keys = set()
        span = hi_t - lo_t
        for dx in range(int(span[:, 0].max()) + 1):
            for dy in range(int(span[:, 1].max()) + 1):
                for dz in range(int(span[:, 2].max()) + 1):
                    d = np.array([dx, dy, dz])
                    ok = np.all(d <= span, axis=1)
                    keys.update(np.unique(pack(lo_t[ok] + d)).tolist())
        return np.array([k in keys for k in pack(tiles).tolist()], bool)

    # ------------------------------------------------------------------ the whole mesh

    def merge(self, color: bool):
        """Concatenate the tile meshes and weld the vertices they share on tile faces:
        (verts (V, 3), faces (F, 3), colors (V, 3) | None; None unless ``color`` and every tile has them)."""
        if not self.tiles:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64), None
        tms = [self.tiles[k] for k in sorted(self.tiles) if len(self.tiles[k].faces)]
        if not tms:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64), None
        verts = np.vstack([tm.verts_W for tm in tms])
        offs = np.cumsum([0] + [len(tm.verts_W) for tm in tms[:-1]])
        faces = np.vstack([tm.faces + o for tm, o in zip(tms, offs)])
        colors = None
        if color and all(tm.colors is not None for tm in tms):
            colors = np.vstack([tm.colors for tm in tms]).astype(np.float32)
        # weld: vertices on shared tile faces come out identical up to rounding
        q = np.round(verts / (self.voxel_m / 4096.0)).astype(np.int64)
        q -= q.min(0)
        key = (q[:, 0] * (int(q[:, 1].max()) + 1) + q[:, 1]) * (int(q[:, 2].max()) + 1) + q[:, 2]
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        verts = verts[first]
        colors = colors[first] if colors is not None else None
        faces = inv[faces]
        ok = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        return verts, faces[ok], colors
