"""The map's region of interest and the plausibility of poses: what keeps one absurd pose out.

A localisation glitch (a pose 100 km off, a jump of metres between two frames 30 ms apart)
must not grow the map to a box it cannot hold. :class:`RegionGuard` checks each frame before
the mapper takes it:

- **region**: the camera must lie within ``map.max_extent_m`` (per axis) of the region's
  centre, which is the first accepted camera position (or, for a map that already has
  bounds, e.g. a loaded one, the centre of those bounds); depth points beyond the region are
  dropped from the frame (their pixels become invalid);
- **pose jump**: between consecutive frames (stamps less than ``map.max_pose_gap_s`` apart,
  or either stamp missing, as offline sources without stamps give: index order then), a
  camera that moved more than ``map.max_pose_jump_m`` or turned more than
  ``map.max_rotation_jump_deg`` (off by default: test rigs and synthetic sequences turn 180 deg
  between frames 33 ms apart, and a turn alone cannot grow the map) from the last accepted frame
  is rejected. When
  ``RELOCALISE_AFTER`` frames in a row jump the same way (they agree with each other), the
  new place is taken as a relocalisation and accepted.

The reasons returned are counted by the mapper in ``stats.reject_reasons``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from neural_mapping.config import MapRegionConfig
from neural_mapping.frame import Frame

log = logging.getLogger(__name__)

#: the reasons (stable strings: they are the keys of ``Mapper.stats.reject_reasons``)
OUTSIDE = "camera outside the region of interest (map.max_extent_m)"
JUMP_M = "pose jump (map.max_pose_jump_m)"
JUMP_DEG = "pose jump (map.max_rotation_jump_deg)"
#: consecutive frames that agree with each other but jump from the last accepted one: a relocalisation
RELOCALISE_AFTER = 5


def _angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


class RegionGuard:
    """Per-map state of the checks (see module doc): the centre and the last accepted pose."""

    def __init__(self, cfg: MapRegionConfig) -> None:
        self.cfg = cfg
        self.center: np.ndarray | None = None  # (3,)
        self._last: tuple[np.ndarray, int] | None = None  # T_WC and stamp of the last accepted frame
        self._streak: list[tuple[np.ndarray, int]] = []  # consecutive jumping frames that agree with each other

    def _jump(self, T_a: np.ndarray, s_a: int, T_b: np.ndarray, s_b: int) -> str | None:
        """Why pose b is an implausible successor of pose a, or None."""
        c = self.cfg
        if s_a and s_b and abs(s_b - s_a) * 1e-9 >= c.max_pose_gap_s:
            return None  # far apart in time: the camera may have moved anywhere
        dist = float(np.linalg.norm(T_b[:3, 3] - T_a[:3, 3]))
        if dist > c.max_pose_jump_m:
            log.debug("pose jump of %.3g m (map.max_pose_jump_m %g)", dist, c.max_pose_jump_m)
            return JUMP_M
        ang = _angle_deg(T_a[:3, :3], T_b[:3, :3]) if c.max_rotation_jump_deg < 180.0 else 0.0
        if ang > c.max_rotation_jump_deg:
            log.debug("pose jump of %.3g deg (map.max_rotation_jump_deg %g)", ang, c.max_rotation_jump_deg)
            return JUMP_DEG
        return None

    def check_pose(self, frame: Frame, bounds=None) -> str | None:
        """Why the frame's pose is refused (one of the reasons above), or None. ``bounds``: the map's
        (lo, hi) when it has any (its centre is the region's until a frame is accepted)."""
        if self.center is None and bounds is not None:
            self.center = (np.asarray(bounds[0], float) + np.asarray(bounds[1], float)) / 2.0
        cam = frame.T_WC[:3, 3]
        if self.center is not None:
            off = float(np.abs(cam - self.center).max())
            if off > self.cfg.max_extent_m:
                log.debug("camera %.3g m from the region's centre (map.max_extent_m %g)", off, self.cfg.max_extent_m)
                return OUTSIDE
        if self._last is None:
            return None
        why = self._jump(*self._last, frame.T_WC, frame.stamp_ns)
        if why is None:
            self._streak = []
            return None
        if self._streak and self._jump(self._streak[-1][0], self._streak[-1][1], frame.T_WC, frame.stamp_ns):
            self._streak = []  # this jump disagrees with the previous one
        self._streak.append((frame.T_WC, frame.stamp_ns))
        if len(self._streak) >= RELOCALISE_AFTER:
            self._streak = []
            return None  # the jump persisted: a relocalisation
        return why

    def admit(self, frame: Frame, bounds=None) -> tuple[Frame, str | None]:
        """(the frame with depth beyond the region dropped, None), or (frame, why it is refused)."""
        why = self.check_pose(frame, bounds)
        return (frame, why) if why else (self.clip_depth(frame), None)

    def clip_depth(self, frame: Frame) -> Frame:
        """The frame with depth pixels whose points lie outside the region set to 0 (the frame
        itself when none does; the centre is the camera's when no frame was accepted yet)."""
        center = self.center if self.center is not None else frame.T_WC[:3, 3]
        e = self.cfg.max_extent_m
        cam = frame.T_WC[:3, 3]
        d = frame.depth_m
        H, W = d.shape
        K = frame.K
        # the longest ray per metre of depth is at an image corner: skip the per-pixel check when
        # no point can reach the border
        cu, cv = np.array([0.0, W - 1.0]), np.array([0.0, H - 1.0])
        r = np.sqrt(1.0 + (np.abs(cu - K[0, 2]).max() / K[0, 0]) ** 2 + (np.abs(cv - K[1, 2]).max() / K[1, 1]) ** 2)
        if float(np.abs(cam - center).max()) + (float(d.max()) if d.size else 0.0) * r <= e:
            return frame
        v, u = np.mgrid[0:H, 0:W]
        rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((H, W))], -1)  # z = 1
        pts = cam + (rays * d[..., None]) @ frame.T_WC[:3, :3].T
        out = (np.abs(pts - center) > e).any(-1) & (d > 0)
        if not out.any():
            return frame
        depth = d.copy()
        depth[out] = 0.0
        return replace(frame, depth_m=depth)

    def accept(self, frame: Frame) -> None:
        """Record an accepted frame (the first fixes the centre of the region)."""
        if self.center is None:
            self.center = frame.T_WC[:3, 3].copy()
        self._last = (frame.T_WC.copy(), int(frame.stamp_ns))
        self._streak = []
