"""A synthetic RGB-D sequence of a furnished room, rendered by Open3D ray casting.

The scene (map frame, z up, floor at z = 0) is a room of 5 x 4 x 2.6 m
(x in [-2.5, 2.5], y in [-2, 2]) built from closed boxes — floor and ceiling slabs,
four wall slabs, a table (top and four legs), a shelf, a cabinet, a low box — and a
cylinder. Free space lies outside every closed part, so a signed distance to the
mesh is positive in the room. Big faces are subdivided into ~5 cm cells whose
vertices carry procedural colours (stripes, checks and smooth waves that vary in
space), so a colour field has detail to learn.

Frames are rendered from a smooth camera path inside the room looking across it:
depth is the z coordinate in the camera (not the ray length), colour is the hit
triangle's vertex colours interpolated barycentrically, with mild Lambertian
shading from a fixed light (view independent). Poses are camera-to-world in OpenCV
axes. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d

from neural_mapping.camera import intrinsics, make_T
from neural_mapping.frame import Frame

#: room interior bounds (m), map frame
ROOM_LO = np.array([-2.5, -2.0, 0.0])
ROOM_HI = np.array([2.5, 2.0, 2.6])
#: first frame's time stamp (ns): an ordinary wall-clock time, so bags look real
T0_NS = 1_700_000_000 * 1_000_000_000
_CELL_M = 0.05
_LIGHT_DIR_W = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])


@dataclass
class SyntheticSequence:
    frames: list[Frame]
    mesh: o3d.geometry.TriangleMesh  # legacy mesh with vertex colours, map frame
    K: np.ndarray  # (3, 3)
    seed: int = 0
    fps: float = 30.0
    #: names of the parts of the scene and their axis-aligned bounds (lo(3), hi(3))
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- geometry


def _pattern(pts_W: np.ndarray, kind: int) -> np.ndarray:
    """Procedural brightness in [0, 1] at points (N, 3); several kinds of texture."""
    x, y, z = pts_W[:, 0], pts_W[:, 1], pts_W[:, 2]
    if kind == 0:  # checkerboard 0.5 m with a soft wave
        c = (np.floor(x / 0.5) + np.floor(y / 0.5) + np.floor(z / 0.5)) % 2
        return 0.35 + 0.45 * c + 0.2 * (0.5 + 0.5 * np.sin(3.1 * x + 1.7 * y + 2.3 * z))
    if kind == 1:  # vertical stripes + horizontal wave
        s = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / 0.6)
        return 0.3 + 0.5 * s + 0.2 * (0.5 + 0.5 * np.cos(2 * np.pi * z / 0.8))
    if kind == 2:  # blotches
        s = np.sin(4.0 * x) * np.cos(3.3 * y) * np.sin(5.1 * z + 0.7)
        return 0.45 + 0.4 * s + 0.15 * (np.floor(z / 0.3) % 2)
    # rings
    r = np.sqrt(x * x + y * y)
    return 0.4 + 0.4 * (0.5 + 0.5 * np.sin(2 * np.pi * r / 0.35)) + 0.2 * (np.floor(z / 0.25) % 2)


def _colorize(mesh: o3d.geometry.TriangleMesh, base_rgb, kind: int) -> None:
    v = np.asarray(mesh.vertices)
    b = np.clip(_pattern(v, kind), 0.0, 1.0)[:, None]
    base = np.asarray(base_rgb, dtype=np.float64)[None, :]
    # mix the base colour with a complementary tint so hue varies too, not only brightness
    tint = 0.5 + 0.5 * np.sin(np.stack([1.3 * v[:, 0] + 0.4, 1.1 * v[:, 1] + 2.0, 1.7 * v[:, 2] + 4.0], 1))
    col = np.clip(0.75 * base * b + 0.25 * tint * b, 0.0, 1.0)
    mesh.vertex_colors = o3d.utility.Vector3dVector(col)


def _grid_face(origin, e1, e2, n1: int, n2: int):
    """Vertices ((n1+1)*(n2+1), 3) and triangles of a subdivided parallelogram.

    Triangles wind counter-clockwise around e1 x e2 (the outward normal).
    """
    a = np.linspace(0.0, 1.0, n1 + 1)
    b = np.linspace(0.0, 1.0, n2 + 1)
    A, B = np.meshgrid(a, b, indexing="ij")
    V = origin[None, :] + A.reshape(-1, 1) * e1[None, :] + B.reshape(-1, 1) * e2[None, :]
    idx = np.arange((n1 + 1) * (n2 + 1)).reshape(n1 + 1, n2 + 1)
    i00 = idx[:-1, :-1].ravel()
    i10 = idx[1:, :-1].ravel()
    i01 = idx[:-1, 1:].ravel()
    i11 = idx[1:, 1:].ravel()
    T = np.concatenate([np.stack([i00, i10, i11], 1), np.stack([i00, i11, i01], 1)], 0)
    return V, T


def _box(lo, hi, cell: float = _CELL_M) -> o3d.geometry.TriangleMesh:
    """Closed axis-aligned box with outward normals and faces subdivided into ~cell squares."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    d = hi - lo
    ex, ey, ez = np.diag(d)
    faces = [  # (origin, e1, e2) with e1 x e2 pointing outwards
        (lo, ey, ex),  # z = lo (normal -z)
        (lo + ez, ex, ey),  # z = hi (+z)
        (lo, ex, ez),  # y = lo (-y)
        (lo + ey, ez, ex),  # y = hi (+y)
        (lo, ez, ey),  # x = lo (-x)
        (lo + ex, ey, ez),  # x = hi (+x)
    ]
    Vs, Ts, off = [], [], 0
    for o, e1, e2 in faces:
        n1 = max(1, int(math.ceil(np.linalg.norm(e1) / cell)))
        n2 = max(1, int(math.ceil(np.linalg.norm(e2) / cell)))
        V, T = _grid_face(o, e1, e2, n1, n2)
        Vs.append(V)
        Ts.append(T + off)
        off += len(V)
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.concatenate(Vs)),
                                  o3d.utility.Vector3iVector(np.concatenate(Ts).astype(np.int32)))
    m.remove_duplicated_vertices()  # shared edges -> a closed (watertight) box
    return m


def _cylinder(center_xy, radius: float, z0: float, z1: float, cell: float = _CELL_M) -> o3d.geometry.TriangleMesh:
    h = z1 - z0
    res = max(16, int(math.ceil(2 * math.pi * radius / cell)))
    split = max(1, int(math.ceil(h / cell)))
    m = o3d.geometry.TriangleMesh.create_cylinder(radius=radius, height=h, resolution=res, split=split)
    m.translate([center_xy[0], center_xy[1], z0 + h / 2])
    return m


def scene_parts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Axis-aligned bounds (lo, hi) of every box of the scene (the cylinder is listed by its bounds)."""
    t = 0.1  # slab thickness
    lo, hi = ROOM_LO, ROOM_HI
    P = {
        "floor": ([lo[0] - t, lo[1] - t, -t], [hi[0] + t, hi[1] + t, 0.0]),
        "ceiling": ([lo[0] - t, lo[1] - t, hi[2]], [hi[0] + t, hi[1] + t, hi[2] + t]),
        "wall_x0": ([lo[0] - t, lo[1] - t, 0.0], [lo[0], hi[1] + t, hi[2]]),
        "wall_x1": ([hi[0], lo[1] - t, 0.0], [hi[0] + t, hi[1] + t, hi[2]]),
        "wall_y0": ([lo[0], lo[1] - t, 0.0], [hi[0], lo[1], hi[2]]),
        "wall_y1": ([lo[0], hi[1], 0.0], [hi[0], hi[1] + t, hi[2]]),
        "table_top": ([-0.6, -0.4, 0.70], [0.6, 0.4, 0.76]),
        "shelf": ([-2.5, -0.9, 0.0], [-2.1, 0.5, 1.8]),
        "cabinet": ([1.8, 0.8, 0.0], [2.5, 2.0, 1.1]),
        "crate": ([-1.6, 1.4, 0.0], [-0.9, 2.0, 0.5]),
        "cylinder": ([1.5 - 0.22, -1.45 - 0.22, 0.0], [1.5 + 0.22, -1.45 + 0.22, 1.2]),
    }
    for i, (sx, sy) in enumerate([(-1, -1), (1, -1), (1, 1), (-1, 1)]):
        cx, cy = 0.52 * sx, 0.32 * sy
        P[f"table_leg{i}"] = ([cx - 0.04, cy - 0.04, 0.0], [cx + 0.04, cy + 0.04, 0.70])
    return {k: (np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)) for k, (a, b) in P.items()}


_STYLE = {  # base colour, pattern kind
    "floor": ((0.75, 0.55, 0.35), 0),
    "ceiling": ((0.9, 0.9, 0.85), 2),
    "wall_x0": ((0.55, 0.7, 0.9), 1),
    "wall_x1": ((0.9, 0.75, 0.55), 1),
    "wall_y0": ((0.6, 0.85, 0.6), 2),
    "wall_y1": ((0.85, 0.6, 0.7), 3),
    "table_top": ((0.6, 0.35, 0.2), 3),
    "shelf": ((0.3, 0.45, 0.75), 0),
    "cabinet": ((0.8, 0.8, 0.3), 2),
    "crate": ((0.9, 0.45, 0.2), 0),
    "cylinder": ((0.8, 0.2, 0.25), 1),
}


def room_mesh() -> o3d.geometry.TriangleMesh:
    """The scene as one legacy TriangleMesh with per-vertex colours (map frame, z up)."""
    out = o3d.geometry.TriangleMesh()
    for name, (lo, hi) in scene_parts().items():
        if name == "cylinder":
            c = (lo + hi) / 2
            m = _cylinder(c[:2], (hi[0] - lo[0]) / 2, lo[2], hi[2])
        else:
            m = _box(lo, hi)
        base, kind = _STYLE.get(name, ((0.5, 0.4, 0.3), 2))
        _colorize(m, base, kind)
        out += m
    out.compute_vertex_normals()
    return out


# ----------------------------------------------------------------------------- trajectory


def look_at_T_WC(eye_W, target_W, up_W=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose (4, 4) of a camera at eye looking at target, OpenCV axes.

    Camera z (forward) points at the target, x right, y down (so image up is world up).
    """
    eye = np.asarray(eye_W, dtype=np.float64)
    z = np.asarray(target_W, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up_W, dtype=np.float64))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)


def trajectory(n_frames: int, seed: int = 0) -> np.ndarray:
    """(n_frames, 4, 4) smooth camera-to-world poses on an ellipse inside the room.

    The camera circles the table (radii 1.3 x 1.0 m, height 1.2-1.6 m) and looks
    across the room at a point on the far side whose height swings between 0.4 and
    1.4 m, so frames see furniture, floor, walls and (looking up) the ceiling: about
    70 % of the room's interior surface is observed by the 60-frame default. The seed
    only shifts the starting phase.
    """
    phase0 = (seed * 0.7853981633974483) % (2 * math.pi)
    out = np.empty((n_frames, 4, 4))
    for i in range(n_frames):
        s = i / max(1, n_frames)  # one full loop over the sequence
        a = phase0 + 2 * math.pi * s
        eye = np.array([1.3 * math.cos(a), 1.0 * math.sin(a), 1.4 + 0.2 * math.sin(3 * a)])
        b = a + math.pi + 0.5 * math.sin(2 * a)
        target = np.array([1.6 * math.cos(b), 1.3 * math.sin(b), 0.9 + 0.5 * math.cos(2 * a)])
        out[i] = look_at_T_WC(eye, target)
    return out


# ----------------------------------------------------------------------------- rendering


class Renderer:
    """Ray casts a legacy mesh with vertex colours: z-depth and barycentric colour."""

    def __init__(self, mesh: o3d.geometry.TriangleMesh):
        self.V = np.asarray(mesh.vertices, dtype=np.float64)  # (Nv, 3)
        self.F = np.asarray(mesh.triangles, dtype=np.int64)  # (Nf, 3)
        self.C = np.asarray(mesh.vertex_colors, dtype=np.float64)  # (Nv, 3)
        n = np.cross(self.V[self.F[:, 1]] - self.V[self.F[:, 0]], self.V[self.F[:, 2]] - self.V[self.F[:, 0]])
        self.face_n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)  # (Nf, 3)
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))

    def render(self, T_WC: np.ndarray, K: np.ndarray, H: int, W: int):
        """-> rgb (H, W, 3) uint8, depth_m (H, W) float32 (z-depth, 0 = no hit)."""
        v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
        dirs_C = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        dirs_W = dirs_C @ T_WC[:3, :3].T  # z-scaled: the hit parameter t is the z-depth
        org_W = np.broadcast_to(T_WC[:3, 3], dirs_W.shape)
        rays = o3d.core.Tensor(np.concatenate([org_W, dirs_W], 1).astype(np.float32))
        ans = self.scene.cast_rays(rays)
        t = ans["t_hit"].numpy().astype(np.float64)  # (H*W,)
        prim = ans["primitive_ids"].numpy().astype(np.int64)
        uv = ans["primitive_uvs"].numpy().astype(np.float64)
        hit = np.isfinite(t) & (prim != o3d.t.geometry.RaycastingScene.INVALID_ID)
        depth = np.where(hit, t, 0.0)
        col = np.zeros((H * W, 3))
        f = self.F[prim[hit]]
        w1, w2 = uv[hit, 0], uv[hit, 1]
        w0 = 1.0 - w1 - w2
        c = w0[:, None] * self.C[f[:, 0]] + w1[:, None] * self.C[f[:, 1]] + w2[:, None] * self.C[f[:, 2]]
        shade = 0.7 + 0.3 * np.abs(self.face_n[prim[hit]] @ _LIGHT_DIR_W)
        col[hit] = c * shade[:, None]
        rgb = np.clip(np.round(col * 255.0), 0, 255).astype(np.uint8).reshape(H, W, 3)
        return rgb, depth.reshape(H, W).astype(np.float32)


def default_K(width: int, height: int, hfov_deg: float = 65.0) -> np.ndarray:
    """Square-pixel intrinsics with the given horizontal field of view, centred."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0)


_MESH_CACHE: o3d.geometry.TriangleMesh | None = None


def synthetic_sequence(n_frames: int = 60, width: int = 160, height: int = 120, seed: int = 0,
                       noise_std_m: float = 0.0, dropout: float = 0.0, fps: float = 30.0,
                       sensor: str = "clean", scene: str = "room") -> SyntheticSequence:
    """Render ``n_frames`` RGB-D frames of the room (see module doc).

    noise_std_m: std of Gaussian noise added to valid depth (m);
    dropout: probability that a depth pixel is set invalid (0).
    sensor: a depth sensor model of :mod:`neural_mapping.io.sensor` (clean, kinect, realsense),
    applied before ``noise_std_m`` and ``dropout``.
    scene: ``room``, or ``mirror`` (:mod:`neural_mapping.io.mirror_scene`: a mirror and a glossy
    sphere, one-bounce reflections).
    Stamps start at T0_NS and advance by 1/fps (rounded to whole microseconds, so
    text formats carry them exactly).
    """
    global _MESH_CACHE
    if n_frames < 1 or width < 2 or height < 2:
        raise ValueError(f"need n_frames >= 1 and a size of at least 2x2, got {n_frames} frames {width}x{height}")
    if not (0.0 <= dropout < 1.0) or noise_std_m < 0 or fps <= 0:
        raise ValueError(f"bad noise/dropout/fps: noise_std_m={noise_std_m} dropout={dropout} fps={fps}")
    if _MESH_CACHE is None:
        _MESH_CACHE = room_mesh()
    mesh = o3d.geometry.TriangleMesh(_MESH_CACHE)  # a copy the caller may modify
    K = default_K(width, height)
    renderer, parts = Renderer(mesh), scene_parts()
    if scene == "mirror":
        from neural_mapping.io.mirror_scene import MirrorRenderer, mirror_room

        mesh, parts = mirror_room()
        renderer = MirrorRenderer(mesh, parts)
    rng = np.random.default_rng(seed)
    frames = []
    for i, T_WC in enumerate(trajectory(n_frames, seed)):
        rgb, depth = renderer.render(T_WC, K, height, width)
        if sensor != "clean":
            from neural_mapping.io.sensor import apply_sensor

            depth = apply_sensor(depth, sensor, rng)
        valid = depth > 0
        if noise_std_m > 0:
            depth = np.where(valid, depth + rng.normal(0.0, noise_std_m, depth.shape), 0.0).astype(np.float32)
            depth[depth < 0] = 0.0
        if dropout > 0:
            depth[rng.random(depth.shape) < dropout] = 0.0
        stamp_ns = T0_NS + int(round(i * 1e6 / fps)) * 1000
        frames.append(Frame(rgb=rgb, depth_m=depth, K=K.copy(), T_WC=T_WC, stamp_ns=stamp_ns))
    return SyntheticSequence(frames=frames, mesh=mesh, K=K, seed=seed, fps=fps, parts=parts)


def write_tiny_bag(out_dir: str | Path, n_frames: int = 8, width: int = 64, height: int = 48, seed: int = 0,
                   storage: str = "mcap") -> Path:
    """Test fixture helper: render a tiny sequence and write it as a rosbag2 bag directory."""
    from neural_mapping.io.bag import write_bag

    seq = synthetic_sequence(n_frames=n_frames, width=width, height=height, seed=seed)
    return write_bag(seq.frames, out_dir, storage=storage)
