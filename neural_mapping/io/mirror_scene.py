"""The mirror room: the synthetic room with a flat mirror and a glossy sphere, ray traced with one bounce.

Geometry (map frame, as :mod:`neural_mapping.io.synthetic`): the room's slabs and furniture,
with a hole in the wall y = 2 m that a mirror quad fills flush (``MIRROR_LO``..``MIRROR_HI``,
normal -y); nothing lies behind it, so any surface a map puts behind the mirror plane is a
phantom. A glossy sphere stands on the floor.

Colour (Open3D ``RaycastingScene``): a ray hitting the mirror is reflected about its normal,
``d - 2 (d . n) n``, and takes (90 % of) the colour of what the reflected ray hits; on the
sphere the colour is ``(1 - GLOSS) diffuse + GLOSS reflected``. One bounce: a reflected ray
takes the diffuse colour of its hit. Depth is the z-depth of the first hit (the mirror's
surface, as a depth camera looking at a mirror with a marker on it would measure).
"""

from __future__ import annotations

import numpy as np
import open3d as o3d

from neural_mapping.io.synthetic import _LIGHT_DIR_W, Renderer, _box, _colorize, _grid_face, scene_parts

#: the mirror quad (x, y, z bounds; y = 2 is the wall plane) and its normal into the room
MIRROR_LO = np.array([-0.8, 2.0, 0.5])
MIRROR_HI = np.array([0.9, 2.0, 2.0])
MIRROR_NORMAL = np.array([0.0, -1.0, 0.0])
SPHERE_CENTER = np.array([0.1, -1.1, 0.35])
SPHERE_RADIUS = 0.3
GLOSS = 0.45  # share of the sphere's colour reflected
MIRROR_GAIN = 0.9  # share of the light a mirror reflects


def mirror_parts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The room's parts with wall_y1 split around the mirror's hole, plus the mirror and sphere bounds."""
    P = dict(scene_parts())
    lo, hi = P.pop("wall_y1")
    mx0, mx1, mz0, mz1 = MIRROR_LO[0], MIRROR_HI[0], MIRROR_LO[2], MIRROR_HI[2]
    y0, y1 = lo[1], hi[1]
    P["wall_y1_left"] = (np.array([lo[0], y0, lo[2]]), np.array([mx0, y1, hi[2]]))
    P["wall_y1_right"] = (np.array([mx1, y0, lo[2]]), np.array([hi[0], y1, hi[2]]))
    P["wall_y1_below"] = (np.array([mx0, y0, lo[2]]), np.array([mx1, y1, mz0]))
    P["wall_y1_above"] = (np.array([mx0, y0, mz1]), np.array([mx1, y1, hi[2]]))
    P["mirror"] = (MIRROR_LO.copy(), MIRROR_HI.copy())
    P["sphere"] = (SPHERE_CENTER - SPHERE_RADIUS, SPHERE_CENTER + SPHERE_RADIUS)
    return P


def mirror_room() -> tuple[o3d.geometry.TriangleMesh, dict]:
    """(mesh with vertex colours, parts); the mirror's and sphere's triangle ranges are parts
    ``"_mirror_tris"`` and ``"_sphere_tris"`` (first, end) for the renderer."""
    from neural_mapping.io.synthetic import _STYLE, _cylinder

    parts = mirror_parts()
    out = o3d.geometry.TriangleMesh()
    ranges = {}
    for name, (lo, hi) in parts.items():
        if name == "mirror":
            V, T = _grid_face(MIRROR_LO, np.array([MIRROR_HI[0] - MIRROR_LO[0], 0, 0]),
                              np.array([0, 0, MIRROR_HI[2] - MIRROR_LO[2]]), 8, 8)  # ex x ez = -y: into the room
            m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(V), o3d.utility.Vector3iVector(T.astype(np.int32)))
            m.vertex_colors = o3d.utility.Vector3dVector(np.full((len(V), 3), 0.35))
        elif name == "sphere":
            m = o3d.geometry.TriangleMesh.create_sphere(SPHERE_RADIUS, resolution=40)
            m.translate(SPHERE_CENTER)
            _colorize(m, (0.25, 0.35, 0.8), 3)
        elif name == "cylinder":
            c = (lo + hi) / 2
            m = _cylinder(c[:2], (hi[0] - lo[0]) / 2, lo[2], hi[2])
            _colorize(m, *_STYLE["cylinder"])
        else:
            m = _box(lo, hi)
            _colorize(m, *_STYLE.get(name if not name.startswith("wall_y1") else "wall_y1", ((0.5, 0.4, 0.3), 2)))
        first = len(out.triangles)
        out += m
        ranges[name] = (first, len(out.triangles))
    out.compute_vertex_normals()
    parts["_mirror_tris"] = ranges["mirror"]
    parts["_sphere_tris"] = ranges["sphere"]
    return out, parts


class MirrorRenderer(Renderer):
    """:class:`~neural_mapping.io.synthetic.Renderer` with one-bounce reflections (module doc)."""

    def __init__(self, mesh: o3d.geometry.TriangleMesh, parts: dict):
        super().__init__(mesh)
        self.mirror_tris = parts["_mirror_tris"]
        self.sphere_tris = parts["_sphere_tris"]

    def _cast(self, org: np.ndarray, dirs: np.ndarray):
        ans = self.scene.cast_rays(o3d.core.Tensor(np.concatenate([org, dirs], 1).astype(np.float32)))
        t = ans["t_hit"].numpy().astype(np.float64)
        prim = ans["primitive_ids"].numpy().astype(np.int64)
        uv = ans["primitive_uvs"].numpy().astype(np.float64)
        hit = np.isfinite(t) & (prim != o3d.t.geometry.RaycastingScene.INVALID_ID)
        return t, np.where(hit, prim, 0), uv, hit

    def _interp(self, A: np.ndarray, prim: np.ndarray, uv: np.ndarray) -> np.ndarray:
        f = self.F[prim]
        w1, w2 = uv[:, 0:1], uv[:, 1:2]
        return (1 - w1 - w2) * A[f[:, 0]] + w1 * A[f[:, 1]] + w2 * A[f[:, 2]]

    def _diffuse(self, prim: np.ndarray, uv: np.ndarray) -> np.ndarray:
        shade = 0.7 + 0.3 * np.abs(self.face_n[prim] @ _LIGHT_DIR_W)
        return self._interp(self.C, prim, uv) * shade[:, None]

    def _in(self, prim: np.ndarray, rng: tuple[int, int]) -> np.ndarray:
        return (prim >= rng[0]) & (prim < rng[1])

    def _bounce(self, pts: np.ndarray, d: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Diffuse colour (N, 3) seen along d reflected about n from pts (black where it escapes)."""
        r = d - 2.0 * (d * n).sum(1, keepdims=True) * n
        t, prim, uv, hit = self._cast(pts + 1e-3 * n, r)
        col = np.zeros_like(pts)
        col[hit] = self._diffuse(prim[hit], uv[hit])
        return col

    def render(self, T_WC: np.ndarray, K: np.ndarray, H: int, W: int):
        """-> rgb (H, W, 3) uint8, depth_m (H, W) float32 (z-depth of the first hit, 0 = no hit)."""
        v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        dirs_C = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        dirs_W = dirs_C @ T_WC[:3, :3].T  # z-scaled: t is the z-depth
        org = np.broadcast_to(T_WC[:3, 3], dirs_W.shape).copy()
        t, prim, uv, hit = self._cast(org, dirs_W)
        col = np.zeros((H * W, 3))
        col[hit] = self._diffuse(prim[hit], uv[hit])
        du = dirs_W / np.linalg.norm(dirs_W, axis=1, keepdims=True)
        pts = org + dirs_W * np.where(hit, t, 0.0)[:, None]
        mir = hit & self._in(prim, self.mirror_tris)
        if mir.any():
            n = np.broadcast_to(MIRROR_NORMAL, (int(mir.sum()), 3))
            col[mir] = MIRROR_GAIN * self._bounce(pts[mir], du[mir], n)
        sph = hit & self._in(prim, self.sphere_tris)
        if sph.any():
            n = pts[sph] - SPHERE_CENTER
            n /= np.linalg.norm(n, axis=1, keepdims=True)
            col[sph] = (1 - GLOSS) * col[sph] + GLOSS * self._bounce(pts[sph], du[sph], n)
        rgb = np.clip(np.round(col * 255.0), 0, 255).astype(np.uint8).reshape(H, W, 3)
        return rgb, np.where(hit, t, 0.0).reshape(H, W).astype(np.float32)


def phantom_region() -> tuple[np.ndarray, np.ndarray]:
    """The box behind the mirror plane (beyond the wall's thickness, within the room's x/z span
    and 2.5 m deep) where a surface of a map is a phantom: (lo (3,), hi (3,))."""
    from neural_mapping.io.synthetic import ROOM_HI, ROOM_LO

    return (np.array([ROOM_LO[0], MIRROR_LO[1] + 0.12, ROOM_LO[2]]),
            np.array([ROOM_HI[0], MIRROR_LO[1] + 2.5, ROOM_HI[2]]))
