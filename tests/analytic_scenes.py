"""Analytic RGB-D scenes for the core's tests: depth computed exactly from rays; and a room with an
exact SDF behind a map (:class:`AnalyticMap`) for the products' tests."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np

from neural_mapping.camera import intrinsics, make_T
from neural_mapping.frame import Frame


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_WC of an OpenCV camera at eye looking at target (x right, y down, z forward)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)


def _pixel_rays(K, T_WC, H, W):
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d_C = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    d_W = d_C @ T_WC[:3, :3].T
    return T_WC[:3, 3], d_W  # origin (3,), dirs (H, W, 3) z-scaled


def sphere_depth(K, T_WC, H, W, center, radius) -> np.ndarray:
    """z-depth (H, W) float32 of a sphere, 0 where the ray misses."""
    o, d = _pixel_rays(K, T_WC, H, W)
    oc = o - np.asarray(center)
    a = (d * d).sum(-1)
    b = 2 * (d * oc).sum(-1)
    c = oc @ oc - radius**2
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)  # t along z-scaled dir = z-depth
    return np.where((disc > 0) & (t > 0), t, 0.0).astype(np.float32)


def plane_depth(K, T_WC, H, W, z_plane: float) -> np.ndarray:
    """z-depth (H, W) of the horizontal plane z = z_plane, 0 where not hit."""
    o, d = _pixel_rays(K, T_WC, H, W)
    t = (z_plane - o[2]) / np.where(np.abs(d[..., 2]) < 1e-9, 1e-9, d[..., 2])
    return np.where(t > 0, t, 0.0).astype(np.float32)


def checker_rgb(K, T_WC, H, W, depth) -> np.ndarray:
    """A smooth colour pattern of the world position of each depth pixel: (H, W, 3) uint8."""
    o, d = _pixel_rays(K, T_WC, H, W)
    p = o + d * depth[..., None]
    c = 0.5 + 0.4 * np.sin(p * np.array([3.0, 5.0, 7.0]))
    return (np.clip(c, 0, 1) * 255).astype(np.uint8)


def sphere_frames(n=24, H=48, W=64, center=(0.0, 0.0, 0.0), radius=0.5, dist=1.4):
    """Cameras on a ring (and two heights) around a sphere, looking at its centre."""
    K = intrinsics(60.0, 60.0, (W - 1) / 2, (H - 1) / 2)
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        h = 0.6 * np.sin(3 * a)
        eye = np.asarray(center) + np.array([dist * np.cos(a), dist * np.sin(a), h])
        T = look_at(eye, center)
        dep = sphere_depth(K, T, H, W, center, radius)
        frames.append(Frame(checker_rgb(K, T, H, W, dep), dep, K, T, stamp_ns=i * 33_000_000))
    return frames, K


def plane_frames(n=16, H=48, W=64, z_plane=0.0, height=1.0):
    """Cameras above the plane z = z_plane looking down at it at an angle."""
    K = intrinsics(50.0, 50.0, (W - 1) / 2, (H - 1) / 2)
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        eye = np.array([0.3 * np.cos(a), 0.3 * np.sin(a), z_plane + height])
        T = look_at(eye, [0.0, 0.0, z_plane], up=(0.0, 1.0, 0.0))
        dep = plane_depth(K, T, H, W, z_plane)
        frames.append(Frame(checker_rgb(K, T, H, W, dep), dep, K, T, stamp_ns=i * 33_000_000))
    return frames, K


def plate_depth(K, T_WC, H, W, half=0.3, top=0.5) -> np.ndarray:
    """z-depth (H, W) of a thin square plate (|x|, |y| <= half at z = top) above the floor z = 0."""
    o, d = _pixel_rays(K, T_WC, H, W)
    dz = np.where(np.abs(d[..., 2]) < 1e-9, 1e-9, d[..., 2])
    t_top = (top - o[2]) / dz
    p = o + d * t_top[..., None]
    on = (np.abs(p[..., 0]) <= half) & (np.abs(p[..., 1]) <= half) & (t_top > 0)
    t_floor = (0.0 - o[2]) / dz
    return np.where(on, t_top, np.where(t_floor > 0, t_floor, 0.0)).astype(np.float32)


def plate_frames(n=12, H=48, W=64, half=0.3, top=0.5):
    """Cameras on a ring above a plate on the floor (see plate_depth), looking down at it."""
    K = intrinsics(50.0, 50.0, (W - 1) / 2, (H - 1) / 2)
    frames = []
    for i in range(n):
        a = 2 * np.pi * i / n
        T = look_at([0.9 * np.cos(a), 0.9 * np.sin(a), 1.6], [0.0, 0.0, 0.25])
        dep = plate_depth(K, T, H, W, half, top)
        frames.append(Frame(checker_rgb(K, T, H, W, dep), dep, K, T, stamp_ns=i * 33_000_000))
    return frames, K


# ----------------------------------------------------------------------------- a room with an exact SDF

ROOM_LO = np.array([0.0, 0.0, 0.0])
ROOM_HI = np.array([4.0, 3.0, 2.5])
BOX_LO = np.array([2.5, 1.8, 0.0])
BOX_HI = np.array([3.3, 2.6, 0.8])
SPHERE_C = np.array([1.2, 2.2, 1.0])
SPHERE_R = 0.3
EYE = np.array([2.0, 1.0, 1.4])
#: what the cameras at EYE of :func:`observed_room` look at
TARGETS = ([3.0, 2.2, 0.4], [1.2, 2.2, 1.0], [0.0, 0.0, 1.2], [4.0, 0.0, 1.0], [4.0, 3.0, 1.5], [0.0, 3.0, 0.5])


def sdf_box(p, lo, hi):
    c, h = (lo + hi) / 2, (hi - lo) / 2
    q = np.abs(p - c) - h
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def scene_sdf(p):
    """Exact signed distance (m) inside the room: walls, a box on the floor, a sphere."""
    room = np.minimum((p - ROOM_LO).min(1), (ROOM_HI - p).min(1))
    return np.minimum.reduce([room, sdf_box(p, BOX_LO, BOX_HI), np.linalg.norm(p - SPHERE_C, axis=1) - SPHERE_R])


def scene_color(p):
    return np.clip(p / ROOM_HI, 0, 1).astype(np.float32)


def render_depth(sdf, T_WC, K, H, W, max_t=10.0) -> np.ndarray:
    """z-depth (H, W) by sphere tracing an exact SDF."""
    v, u = np.mgrid[0:H, 0:W]
    d_C = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
    d_W = d_C @ T_WC[:3, :3].T
    n = np.linalg.norm(d_W, axis=1)
    unit = d_W / n[:, None]
    o, t, alive = T_WC[:3, 3], np.zeros(len(unit)), np.ones(len(unit), bool)
    for _ in range(300):
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        s = sdf(o + unit[idx] * t[idx, None])
        t[idx] += s
        alive[idx[(np.abs(s) < 1e-7) | (t[idx] > max_t)]] = False
    return np.where(t < max_t, t / n, 0.0).reshape(H, W).astype(np.float32)


def frame_at(sdf, T_WC, H=90, W=120, f=75.0) -> Frame:
    """A frame (black image) of an exact SDF seen from T_WC."""
    K = intrinsics(f, f, (W - 1) / 2, (H - 1) / 2)
    return Frame(np.zeros((H, W, 3), np.uint8), render_depth(sdf, T_WC, K, H, W), K, T_WC)


class AnalyticMap:
    """A map answering with an exact SDF: a :class:`neural_mapping.products.MapView`.

    ``field`` is the SDF function (assigning another one is a new field); a test that changes it
    in place of training bumps ``stats.steps`` as training would. The field never trains, so the
    map is its own snapshot and products read it under its ``lock``.
    """

    def __init__(self, sdf=scene_sdf, cfg=None, coverage_voxel: float = 0.05):
        from neural_mapping.config import MapperConfig
        from neural_mapping.coverage import Coverage

        self.sdf_fn = sdf
        self.cfg = cfg or MapperConfig()
        self.coverage = Coverage(coverage_voxel)
        self.lock = threading.RLock()
        self.n_queried = 0
        self.max_chunk = 0
        self.stats = SimpleNamespace(steps=0)

    @property
    def field(self):
        return self.sdf_fn

    def snapshot(self, into=None) -> AnalyticMap:
        return self

    def add_frame(self, frame: Frame) -> None:
        # stride 1: the test images are small (rays 1-2 cm apart at 1.5 m, like 640x480 at stride 4)
        self.coverage.update(frame, max_depth_m=self.cfg.render.max_depth_m, stride=1)

    def bounds(self):
        b = self.coverage.bounds()
        if b is None:
            return None
        return b[0] - self.cfg.field.margin_m, b[1] + self.cfg.field.margin_m

    def occupancy_from_value(self, vals) -> np.ndarray:
        """A sharp sigmoid of the sdf (1 cm)."""
        return (1 / (1 + np.exp(np.clip(np.asarray(vals, np.float64) / 0.01, -50, 50)))).astype(np.float32)

    def query(self, pts_W, want_gradient=False, want_color=False, chunk=65536):
        assert self.lock._is_owned()  # products hold the lock: one snapshot
        p = np.asarray(pts_W, np.float64)
        self.n_queried += len(p)
        self.max_chunk = max(self.max_chunk, len(p))
        s = self.sdf_fn(p)
        g = None
        if want_gradient:
            h, g = 1e-5, np.empty((len(p), 3))
            for i in range(3):
                e = np.zeros(3)
                e[i] = h
                g[:, i] = (self.sdf_fn(p + e) - self.sdf_fn(p - e)) / (2 * h)
        occ = np.where(self.coverage.observed(p), self.occupancy_from_value(s), 0.5)
        return SimpleNamespace(sdf=s.astype(np.float32), gradient=None if g is None else g.astype(np.float32),
                               occupancy=occ.astype(np.float32), color=scene_color(p) if want_color else None)


def observed_room() -> AnalyticMap:
    """An analytic map of the room whose coverage is that of cameras at EYE looking at TARGETS."""
    m = AnalyticMap()
    for tgt in TARGETS:
        m.add_frame(frame_at(scene_sdf, look_at(EYE, tgt)))
    return m
