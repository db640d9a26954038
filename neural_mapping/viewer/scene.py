"""What the viewer draws besides the mesh: the camera trajectory, keyframe frusta with their images,
the 2D occupancy as a textured plane and an SDF slice as a heat map, all in map coordinates.

Images on planes: viser's ``add_image`` draws the image on the local x-y plane with its first row
at +y (the top), while the products' grids have row 0 at min y: rows are flipped before sending.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from neural_mapping.viewer.look import R_to_wxyz

THUMB_MAX_W = 96  # keyframe images on frusta are at most this wide


class Trajectory:
    """Positions of the frames seen, in order (thread-safe): the input the viewer feeds, or the
    core's latest integrated frame polled by the viewer's loop (the node)."""

    def __init__(self, min_step_m: float = 0.01) -> None:
        self._lock = threading.Lock()
        self._pts: list[np.ndarray] = []
        self._last_stamp = None
        self.min_step_m = min_step_m
        self.version = 0

    def observe(self, frame) -> None:
        """Add a frame's position; frames not newer than the last one are ignored (the feeder and the
        loop's poll of the core's latest frame may both report it)."""
        if frame is None or (self._last_stamp is not None and frame.stamp_ns <= self._last_stamp):
            return
        p = np.asarray(frame.T_WC[:3, 3], np.float64)
        with self._lock:
            self._last_stamp = frame.stamp_ns
            if self._pts and np.linalg.norm(p - self._pts[-1]) < self.min_step_m:
                return
            self._pts.append(p)
            self.version += 1

    def clear(self) -> None:
        with self._lock:
            self._pts.clear()
            self._last_stamp = None
            self.version += 1

    def points(self) -> np.ndarray:
        with self._lock:
            return np.array(self._pts, np.float64).reshape(-1, 3)


@dataclass
class KeyframeView:
    stamp_ns: int
    T_WC: np.ndarray  # (4, 4)
    image: np.ndarray  # (h, w, 3) uint8, black where the keyframe had no depth
    fov_rad: float  # vertical
    aspect: float


def keyframe_view(kf) -> KeyframeView:
    """A keyframe's image rebuilt from what the map stores of it (colour at the pixels with depth and
    their camera directions (x, y, 1)): its pixels splatted on a grid spanning the directions'
    range, at most THUMB_MAX_W wide. Works for live maps and for map files saved with keyframes."""
    d = kf.dirs_C.detach().cpu().numpy().astype(np.float64)
    rgb = kf.rgb.detach().cpu().numpy()
    x0, x1 = float(d[:, 0].min()), float(d[:, 0].max())
    y0, y1 = float(d[:, 1].min()), float(d[:, 1].max())
    aspect = max(x1 - x0, 1e-6) / max(y1 - y0, 1e-6)
    w = THUMB_MAX_W
    h = max(2, int(round(w / aspect)))
    img = np.zeros((h, w, 3), np.uint8)
    u = np.clip(((d[:, 0] - x0) / max(x1 - x0, 1e-9) * (w - 1)).round().astype(int), 0, w - 1)
    v = np.clip(((d[:, 1] - y0) / max(y1 - y0, 1e-9) * (h - 1)).round().astype(int), 0, h - 1)
    img[v, u] = rgb
    fov = 2.0 * math.atan(max(abs(y0), abs(y1)))
    return KeyframeView(int(kf.stamp_ns), np.asarray(kf.T_WC_np, np.float64), img, fov, aspect)


def keyframes_of(mapper) -> list:
    """The map's keyframes (a list copy: safe while the trainer adds or drops some)."""
    kb = getattr(mapper, "keyframes", None)
    return list(getattr(kb, "keyframes", []))


def occupancy_rgb(data: np.ndarray) -> np.ndarray:
    """(H, W) int8 occupancy (0 free, 100 occupied, -1 unknown) -> (H, W, 3) uint8, rows flipped for add_image."""
    img = np.full(data.shape + (3,), 128, np.uint8)
    img[data == 0] = (235, 235, 235)
    img[data == 100] = (20, 20, 20)
    return np.ascontiguousarray(img[::-1])


def sdf_rgb(distance: np.ndarray, clip_m: float = 0.5) -> np.ndarray:
    """Diverging heat map of a signed distance slice (red inside, blue far, white at the surface),
    unknown grey; rows flipped for add_image."""
    d = np.clip(np.nan_to_num(distance, nan=0.0) / clip_m, -1.0, 1.0)
    pos, neg = np.clip(d, 0, 1), np.clip(-d, 0, 1)
    r = 1.0 - 0.8 * pos
    g = 1.0 - 0.6 * pos - 0.8 * neg
    b = 1.0 - 0.8 * neg
    img = np.stack([r, g, b], -1)
    band = np.abs(np.nan_to_num(distance, nan=1e9)) < 0.01
    img[band] = (0.0, 0.0, 0.0)  # the zero level set as a dark line
    img[~np.isfinite(distance)] = (0.5, 0.5, 0.5)
    return np.ascontiguousarray((img[::-1] * 255 + 0.5).astype(np.uint8))


class SceneLayers:
    """Trajectory, frusta, occupancy plane and SDF slice on a viser server."""

    def __init__(self, server) -> None:
        self.server = server
        self._traj = None
        self._frusta: dict[int, object] = {}
        self._planes: dict[str, object] = {}
        self.show_frusta = self.show_trajectory = True

    def set_trajectory(self, pts: np.ndarray) -> None:
        if len(pts) < 2:
            return
        seg = np.stack([pts[:-1], pts[1:]], axis=1).astype(np.float32)
        self._traj = self.server.scene.add_line_segments("/trajectory", seg, colors=(255, 120, 0), thickness=0.015,
                                                          visible=self.show_trajectory)

    def set_frusta(self, keyframes: list, scale: float = 0.15) -> int:
        """One frustum per keyframe with its image (built once per keyframe); returns how many changed."""
        want = {int(k.stamp_ns): k for k in keyframes}
        changed = 0
        for s in [s for s in self._frusta if s not in want]:
            self._frusta.pop(s).remove()
            changed += 1
        for s, kf in want.items():
            if s in self._frusta:
                continue
            kv = keyframe_view(kf)
            T = kv.T_WC
            self._frusta[s] = self.server.scene.add_camera_frustum(
                f"/keyframes/k{s}", fov=kv.fov_rad, aspect=kv.aspect, scale=scale, color=(0, 140, 255),
                image=kv.image, format="jpeg", wxyz=R_to_wxyz(T[:3, :3]), position=T[:3, 3], visible=self.show_frusta)
            changed += 1
        return changed

    def set_trajectory_visible(self, visible: bool) -> None:
        self.show_trajectory = bool(visible)
        if self._traj is not None:
            self._traj.visible = bool(visible)

    def set_frusta_visible(self, visible: bool) -> None:
        self.show_frusta = bool(visible)
        for h in self._frusta.values():
            h.visible = self.show_frusta

    def set_plane(self, name: str, rgb: np.ndarray, origin_xy, resolution: float, z: float, visible: bool = True):
        """An image (rows already flipped: first row at max y) on the horizontal plane at height z whose
        lower-left corner is ``origin_xy`` and whose cells are ``resolution`` wide."""
        H, W = rgb.shape[:2]
        if H == 0 or W == 0:
            return None
        w, h = W * resolution, H * resolution
        pos = (float(origin_xy[0]) + 0.5 * w, float(origin_xy[1]) + 0.5 * h, float(z))
        self._planes[name] = self.server.scene.add_image(f"/{name}", rgb, render_width=w, render_height=h,
                                                         format="png", position=pos, visible=visible)
        return self._planes[name]

    def set_plane_visible(self, name: str, visible: bool) -> None:
        if name in self._planes:
            self._planes[name].visible = bool(visible)

    def clear(self) -> None:
        for h in list(self._frusta.values()) + list(self._planes.values()):
            h.remove()
        self._frusta.clear()
        self._planes.clear()
        if self._traj is not None:
            self._traj.remove()
            self._traj = None

    @property
    def frusta(self) -> int:
        return len(self._frusta)
