"""Classical TSDF fusion (Open3D's VoxelBlockGrid, CPU) as the baseline the neural map is compared with.

:class:`TsdfFusion` integrates frames one by one (timed), meshes the zero crossing, renders
depth and colour from its mesh at a pose (held-out views) and gives an ESDF: the exact
Euclidean distance transform of its occupied voxels (voxels holding a mesh vertex) at the query
points, with its gradient, as a planner on a TSDF map would use it. Memory is the voxel
blocks in use times the bytes per voxel (tsdf, weight: float32; colour: 3 x float32).
(Open3D 0.20's legacy ScalableTSDFVolume returned empty meshes here, hence the tensor grid.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from neural_mapping.frame import Frame

_BLOCK_RES = 8
_BYTES_PER_VOXEL = 4 + 4 + 12


@dataclass
class TsdfResult:
    mesh: object  # open3d.geometry.TriangleMesh (legacy), map frame
    seconds: float  # integration + meshing
    frames: int
    voxel_m: float
    memory_mb: float  # voxel blocks in use x block size x bytes per voxel
    integrate_s: float = 0.0
    mesh_s: float = 0.0


class TsdfFusion:
    """An Open3D TSDF volume at ``voxel_m`` (truncation ``trunc_m``, default 4 voxels)."""

    def __init__(self, voxel_m: float = 0.02, trunc_m: float | None = None, max_depth_m: float = 6.0,
                 block_count: int = 50_000):
        import open3d as o3d
        import open3d.core as o3c

        self.voxel_m = float(voxel_m)
        self.trunc_m = float(trunc_m) if trunc_m is not None else 4 * self.voxel_m
        self.max_depth_m = float(max_depth_m)
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=self.voxel_m, block_resolution=_BLOCK_RES,
            block_count=block_count, device=o3c.Device("CPU:0"))
        self.frames = 0
        self.integrate_s = 0.0
        self._mesh = None
        self._esdf = None

    def integrate(self, f: Frame) -> None:
        import open3d as o3d
        import open3d.core as o3c

        t0 = time.perf_counter()
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(np.nan_to_num(f.depth_m, nan=0.0),
                                                                     dtype=np.float32)))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f.rgb, dtype=np.float32) / 255.0))
        K = o3c.Tensor(np.asarray(f.K, dtype=np.float64))
        ext = o3c.Tensor(np.linalg.inv(f.T_WC))
        mult = self.trunc_m / self.voxel_m
        coords = self.vbg.compute_unique_block_coordinates(depth, K, ext, 1.0, self.max_depth_m,
                                                           trunc_voxel_multiplier=mult)
        self.vbg.integrate(coords, depth, color, K, K, ext, 1.0, self.max_depth_m, trunc_voxel_multiplier=mult)
        self.frames += 1
        self.integrate_s += time.perf_counter() - t0
        self._mesh = self._esdf = None

    @property
    def memory_mb(self) -> float:
        return int(self.vbg.hashmap().size()) * _BLOCK_RES ** 3 * _BYTES_PER_VOXEL / 2 ** 20

    def mesh(self, weight_threshold: float = 0.5):
        """The zero crossing as a legacy TriangleMesh with vertex colours (cached until the next frame)."""
        if self._mesh is None:
            self._mesh = self.vbg.extract_triangle_mesh(weight_threshold=weight_threshold).to_legacy()
        return self._mesh

    def render(self, T_WC: np.ndarray, K: np.ndarray, H: int, W: int):
        """(rgb (H, W, 3) float [0, 1], z-depth (H, W), 0 = no surface) ray cast from the mesh."""
        import open3d as o3d

        from neural_mapping.camera import image_rays_W

        m = self.mesh()
        if len(m.triangles) == 0:
            return np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
        o, d = (x.numpy() for x in image_rays_W(np.asarray(T_WC, np.float64), np.asarray(K, np.float64), H, W))
        ans = scene.cast_rays(o3d.core.Tensor(np.concatenate([o, d], 1).astype(np.float32)))  # d z-scaled: t = z
        t = ans["t_hit"].numpy()
        hit = np.isfinite(t)
        prim = ans["primitive_ids"].numpy()[hit].astype(np.int64)
        uv = ans["primitive_uvs"].numpy()[hit]
        F, C = np.asarray(m.triangles)[prim], np.asarray(m.vertex_colors)
        col = np.zeros((H * W, 3), np.float32)
        if len(C):
            col[hit] = ((1 - uv.sum(1))[:, None] * C[F[:, 0]] + uv[:, :1] * C[F[:, 1]] + uv[:, 1:] * C[F[:, 2]])
        return col.reshape(H, W, 3), np.where(hit, t, 0.0).astype(np.float32).reshape(H, W)

    # ------------------------------------------------------------------ ESDF

    def _occupied_tree(self):
        from scipy.spatial import cKDTree

        if self._esdf is None:
            v = np.asarray(self.mesh().vertices)
            if len(v) == 0:
                return None
            occ = np.unique(np.floor(v / self.voxel_m).astype(np.int64), axis=0)
            self._esdf = cKDTree((occ + 0.5) * self.voxel_m)
        return self._esdf

    def esdf(self, pts_W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance (N,), gradient (N, 3)) from points to the nearest occupied voxel centre (a voxel
        holding a vertex of the TSDF's mesh): the values of the exact Euclidean distance transform
        (scipy.ndimage.distance_transform_edt) of the occupied voxels, evaluated at the points
        themselves through a k-d tree of the occupied voxel centres instead of over a dense grid
        (a room at 2 cm with 2 m around it is ~10^8 voxels); the gradient is the unit vector from
        that centre. Unsigned: a TSDF's ESDF has no inside where it saw no inside."""
        tree = self._occupied_tree()
        pts = np.asarray(pts_W, np.float64)
        if tree is None:
            return np.full(len(pts), np.nan), np.full((len(pts), 3), np.nan)
        d, i = tree.query(pts)
        diff = pts - tree.data[i]
        return d, diff / np.maximum(d, 1e-9)[:, None]


def tsdf_baseline(frames: Iterable[Frame], voxel_m: float = 0.02, trunc_m: float | None = None,
                  max_depth_m: float = 6.0, weight_threshold: float = 0.5) -> TsdfResult:
    """Fuse ``frames`` and mesh them: the timed classical baseline of the same frames."""
    fusion = TsdfFusion(voxel_m, trunc_m, max_depth_m)
    for f in frames:
        fusion.integrate(f)
    t0 = time.perf_counter()
    mesh = fusion.mesh(weight_threshold)
    mesh_s = time.perf_counter() - t0
    return TsdfResult(mesh, fusion.integrate_s + mesh_s, fusion.frames, fusion.voxel_m, fusion.memory_mb,
                      fusion.integrate_s, mesh_s)


__all__ = ["TsdfFusion", "TsdfResult", "tsdf_baseline"]
