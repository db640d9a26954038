"""The synthetic floor: a 40 x 20 m site (a corridor and ten furnished rooms) and a walk through it.

Geometry (map frame, z up, metres): floor and ceiling slabs over ``SITE_LO``..``SITE_HI`` (2.6 m
high); a corridor along x at ``CORRIDOR_Y``; five 8 m wide rooms on each side of it, each with a
1.2 m door in its corridor wall and its own furniture (a table on four legs, a shelf against the
back wall, a cabinet, a crate and a round bin, placed from the room's index so the scene is fixed).
Walls are 0.1 m slabs. Built from the room scene's parts (:mod:`neural_mapping.io.synthetic`: the
same boxes, textures and renderer), so frames look like the room's.

The walk (:func:`floor_trajectory`) goes east along the corridor and into every room on its way
(through the door, once around the room looking at its walls, back out), then back west along the
corridor: about 330 m, sampled uniformly by arc length into ``n_frames`` poses (default
``DEFAULT_FRAMES``: 8 cm between frames at 30 fps, a fast walk). The camera is at 1.2-1.6 m and
looks ahead along the walk with a slow yaw and pitch swing.
"""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d

from neural_mapping.frame import Frame
from neural_mapping.io.synthetic import (T0_NS, Renderer, SyntheticSequence, _box, _colorize, _cylinder, default_K,
                                         look_at_T_WC)

SITE_LO = np.array([0.0, 0.0, 0.0])
SITE_HI = np.array([40.0, 20.0, 2.6])
CORRIDOR_Y = (8.5, 11.5)
ROOM_W = 8.0
DOOR_W = 1.2
WALL_T = 0.1
DEFAULT_FRAMES = 4000
_SLAB_CELL = 0.1  # the large slabs are subdivided coarser than furniture (texture sampling)


def _rooms() -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """(index, interior lo (2,), interior hi (2,), door side y) of the ten rooms."""
    out = []
    for i in range(10):
        col, north = i % 5, i >= 5
        x0, x1 = col * ROOM_W, (col + 1) * ROOM_W
        if north:
            out.append((i, np.array([x0, CORRIDOR_Y[1]]), np.array([x1, SITE_HI[1]]), CORRIDOR_Y[1]))
        else:
            out.append((i, np.array([x0, SITE_LO[1]]), np.array([x1, CORRIDOR_Y[0]]), CORRIDOR_Y[0]))
    return out


def floor_parts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Axis-aligned bounds (lo (3,), hi (3,)) of every box of the site (bins listed by their bounds)."""
    t, H = WALL_T, SITE_HI[2]
    lo, hi = SITE_LO, SITE_HI
    P = {
        "floor": ([lo[0] - t, lo[1] - t, -t], [hi[0] + t, hi[1] + t, 0.0]),
        "ceiling": ([lo[0] - t, lo[1] - t, H], [hi[0] + t, hi[1] + t, H + t]),
        "wall_x0": ([lo[0] - t, lo[1] - t, 0.0], [lo[0], hi[1] + t, H]),
        "wall_x1": ([hi[0], lo[1] - t, 0.0], [hi[0] + t, hi[1] + t, H]),
        "wall_y0": ([lo[0], lo[1] - t, 0.0], [hi[0], lo[1], H]),
        "wall_y1": ([lo[0], hi[1], 0.0], [hi[0], hi[1] + t, H]),
    }
    for i, rlo, rhi, door_y in _rooms():
        x0, x1 = rlo[0], rhi[0]
        if i % 5:  # partition between this room and the one west of it
            P[f"partition{i}"] = ([x0 - t / 2, rlo[1], 0.0], [x0 + t / 2, rhi[1], H])
        cx = (x0 + x1) / 2 + (1.5 if i % 2 else -1.5)
        y0, y1 = (door_y, door_y + t) if i >= 5 else (door_y - t, door_y)
        P[f"door_wall{i}_w"] = ([x0, y0, 0.0], [cx - DOOR_W / 2, y1, H])
        P[f"door_wall{i}_e"] = ([cx + DOOR_W / 2, y0, 0.0], [x1, y1, H])
        P[f"lintel{i}"] = ([cx - DOOR_W / 2, y0, 2.1], [cx + DOOR_W / 2, y1, H])
        rng = np.random.default_rng(100 + i)
        mx, my = (x0 + x1) / 2 + rng.uniform(-1.0, 1.0), (rlo[1] + rhi[1]) / 2 + rng.uniform(-0.8, 0.8)
        P[f"table{i}_top"] = ([mx - 0.7, my - 0.45, 0.70], [mx + 0.7, my + 0.45, 0.76])
        for k, (sx, sy) in enumerate([(-1, -1), (1, -1), (1, 1), (-1, 1)]):
            lx, ly = mx + 0.62 * sx, my + 0.37 * sy
            P[f"table{i}_leg{k}"] = ([lx - 0.04, ly - 0.04, 0.0], [lx + 0.04, ly + 0.04, 0.70])
        back = rhi[1] if i >= 5 else rlo[1]  # the wall opposite the door
        sx0 = x0 + rng.uniform(0.6, 4.0)
        P[f"shelf{i}"] = ([sx0, back - 0.4, 0.0], [sx0 + 1.6, back, 1.8]) if i >= 5 else \
            ([sx0, back, 0.0], [sx0 + 1.6, back + 0.4, 1.8])
        cab_x = x1 - rng.uniform(0.8, 1.6)
        cab_y = rlo[1] + rng.uniform(1.5, rhi[1] - rlo[1] - 2.5)
        P[f"cabinet{i}"] = ([cab_x, cab_y, 0.0], [x1, cab_y + 1.2, 1.1])
        kx, ky = x0 + rng.uniform(0.4, 1.5), rlo[1] + rng.uniform(1.5, rhi[1] - rlo[1] - 1.5)
        P[f"crate{i}"] = ([kx, ky, 0.0], [kx + 0.7, ky + 0.6, 0.5])
        bx, by = mx + rng.choice([-1.8, 1.8]), my + rng.uniform(-1.0, 1.0)
        P[f"bin{i}"] = ([bx - 0.22, by - 0.22, 0.0], [bx + 0.22, by + 0.22, 0.9])
    return {k: (np.array(a, np.float64), np.array(b, np.float64)) for k, (a, b) in P.items()}


def _style(name: str) -> tuple[tuple, int]:
    pal = {"floor": ((0.75, 0.55, 0.35), 0), "ceiling": ((0.9, 0.9, 0.85), 2), "table": ((0.6, 0.35, 0.2), 3),
           "shelf": ((0.3, 0.45, 0.75), 0), "cabinet": ((0.8, 0.8, 0.3), 2), "crate": ((0.9, 0.45, 0.2), 0),
           "bin": ((0.8, 0.2, 0.25), 1), "lintel": ((0.85, 0.6, 0.7), 3)}
    for k, v in pal.items():
        if name.startswith(k):
            return v
    h = sum(map(ord, name)) % 4  # walls: four colours and patterns
    return [((0.55, 0.7, 0.9), 1), ((0.9, 0.75, 0.55), 1), ((0.6, 0.85, 0.6), 2), ((0.85, 0.6, 0.7), 3)][h]


def floor_mesh() -> o3d.geometry.TriangleMesh:
    """The site as one legacy TriangleMesh with vertex colours (map frame, z up)."""
    out = o3d.geometry.TriangleMesh()
    for name, (lo, hi) in floor_parts().items():
        if name.startswith("bin"):
            c = (lo + hi) / 2
            m = _cylinder(c[:2], (hi[0] - lo[0]) / 2, lo[2], hi[2])
        else:
            big = float(np.max(hi - lo)) > 3.0
            m = _box(lo, hi, cell=_SLAB_CELL if big else 0.05)
        base, kind = _style(name)
        _colorize(m, base, kind)
        out += m
    out.compute_vertex_normals()
    return out


def _waypoints() -> np.ndarray:
    """(M, 2) x-y of the walk: corridor east with a visit to each room, then corridor west."""
    cy = sum(CORRIDOR_Y) / 2
    pts = [(0.8, cy)]
    rooms = sorted(_rooms(), key=lambda r: ((r[1][0] + r[2][0]) / 2, r[0]))
    for i, rlo, rhi, door_y in rooms:
        parts = floor_parts()
        dx = (parts[f"door_wall{i}_w"][1][0] + parts[f"door_wall{i}_e"][0][0]) / 2  # door centre x
        inside = 1.0 if i >= 5 else -1.0
        ctr = (rlo + rhi) / 2
        pts += [(dx, cy), (dx, door_y + inside * 1.2)]
        for a in np.linspace(0, 2 * math.pi, 13):  # once around the room, 2.2 x 2.0 m from its centre
            pts.append((ctr[0] + 2.2 * math.sin(a) * (1 if i % 2 else -1), ctr[1] - inside * 2.0 * math.cos(a)))
        pts += [(dx, door_y + inside * 1.2), (dx, cy)]
    pts.append((SITE_HI[0] - 0.8, cy))
    pts.append((0.8, cy + 0.6))
    return np.asarray(pts, np.float64)


def floor_trajectory(n_frames: int = DEFAULT_FRAMES) -> np.ndarray:
    """(n_frames, 4, 4) camera-to-world poses of the walk (see module doc)."""
    wp = _waypoints()
    seg = np.linalg.norm(np.diff(wp, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-6])
    wp = wp[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(wp, axis=0), axis=1))])
    L = s[-1]
    out = np.empty((n_frames, 4, 4))
    ahead = 1.5  # m along the path the camera looks at
    for k in range(n_frames):
        u = L * k / max(1, n_frames - 1)
        p = np.array([np.interp(u, s, wp[:, 0]), np.interp(u, s, wp[:, 1])])
        q = np.array([np.interp(min(L, u + ahead), s, wp[:, 0]), np.interp(min(L, u + ahead), s, wp[:, 1])])
        d = q - p if np.linalg.norm(q - p) > 1e-3 else np.array([1.0, 0.0])
        yaw = math.atan2(d[1], d[0]) + 0.5 * math.sin(u / 1.7)
        pitch = 0.25 * math.sin(u / 2.3) - 0.1
        eye = np.array([p[0], p[1], 1.4 + 0.2 * math.sin(u / 3.1)])
        look = eye + np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
        out[k] = look_at_T_WC(eye, look)
    return out


def floor_frames(n_frames: int = DEFAULT_FRAMES, width: int = 160, height: int = 120, seed: int = 0,
                 sensor: str = "clean", noise_std_m: float = 0.0, dropout: float = 0.0, fps: float = 30.0,
                 mesh: o3d.geometry.TriangleMesh | None = None):
    """Frames of the walk, rendered one at a time (a generator: thousands of frames are never all
    held), with the sensor model and noise of :func:`~neural_mapping.io.synthetic.synthetic_sequence`."""
    mesh = mesh if mesh is not None else floor_mesh()
    K = default_K(width, height)
    renderer = Renderer(mesh)
    rng = np.random.default_rng(seed)
    for i, T_WC in enumerate(floor_trajectory(n_frames)):
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
        yield Frame(rgb=rgb, depth_m=depth, K=K.copy(), T_WC=T_WC, stamp_ns=T0_NS + int(round(i * 1e6 / fps)) * 1000)


def floor_sequence(n_frames: int = DEFAULT_FRAMES, width: int = 160, height: int = 120, seed: int = 0,
                   **kw) -> SyntheticSequence:
    """A :class:`SyntheticSequence` of the floor whose ``frames`` is a generator (see :func:`floor_frames`)."""
    mesh = floor_mesh()
    frames = floor_frames(n_frames, width, height, seed, mesh=mesh, **kw)
    return SyntheticSequence(frames=frames, mesh=mesh, K=default_K(width, height), seed=seed,
                             fps=kw.get("fps", 30.0), parts=floor_parts())
