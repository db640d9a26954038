"""Approximate time synchronisation of color, depth, camera_info and pose streams.

Pure Python (no rclpy): the offline bag reader and the ROS node feed it the same way.
Payloads are opaque (messages, arrays, anything); the synchroniser only looks at
stamps, plus the 4x4 pose matrices it interpolates.

Rules (each stream arrives in its own stamp order, as ROS topics and bags do):
  * every depth image is paired with the colour image of nearest stamp; the pair is
    kept when ``|t_color - t_depth| <= slop_s``. A pairing is final once a colour
    image at or after the depth stamp has arrived (no later one can be nearer);
  * the camera_info used is the one of nearest stamp among those received (it is
    static for a camera; a set waits until one has arrived);
  * the pose is interpolated at the depth stamp (the set's stamp) between the
    bracketing pose stamps (``camera.interpolate_pose_at``, slerp for rotation); a set
    waits until a pose at or after its stamp arrives; it is dropped when its stamp is
    before the first pose (by more than ``slop_s``; within it the first pose is used),
    or the bracketing poses are more than ``max_pose_gap_s`` apart. ``flush()`` at the
    end of a stream also accepts the last pose when it is within ``slop_s``.
  * queues are bounded (``max_queue`` per stream); the oldest entries are dropped and
    counted.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from neural_mapping.camera import insert_stamped_pose, interpolate_pose_at


@dataclass
class SyncedSet:
    """One matched RGB-D set. ``stamp_ns`` is the depth stamp; T_WC is the pose there."""

    stamp_ns: int
    color: Any
    depth: Any
    info: Any
    T_WC: np.ndarray  # (4, 4)
    color_stamp_ns: int = 0


@dataclass
class SyncStats:
    emitted: int = 0
    dropped_color: int = 0  # colour images that never paired with a depth image
    dropped_depth: int = 0  # depth images with no colour image within the slop
    dropped_no_pose: int = 0  # pairs with no pose bracketing their stamp
    dropped_overflow: int = 0  # entries pushed out of a full queue

    @property
    def dropped(self) -> int:
        return self.dropped_color + self.dropped_depth + self.dropped_no_pose + self.dropped_overflow


@dataclass
class _Pair:
    stamp_ns: int
    color: Any
    depth: Any
    color_stamp_ns: int


class ApproxSync:
    """Collects color/depth/info/pose messages and emits matched ``SyncedSet`` s.

    Usage: call ``add_color``/``add_depth``/``add_info``/``add_pose`` as messages come
    in (each returns the sets that became complete, oldest first), ``flush()`` at the end.
    """

    def __init__(self, slop_s: float = 0.02, max_pose_gap_s: float = 0.5, max_queue: int = 100,
                 pose_history_s: float = 30.0):
        if slop_s < 0 or max_pose_gap_s <= 0 or max_queue < 1:
            raise ValueError(f"bad sync settings: slop_s={slop_s} max_pose_gap_s={max_pose_gap_s} max_queue={max_queue}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.max_pose_gap_s = float(max_pose_gap_s)
        self.max_queue = int(max_queue)
        self.pose_history_ns = int(pose_history_s * 1e9)
        self.stats = SyncStats()
        self._color: deque[tuple[int, Any]] = deque()
        self._depth: deque[tuple[int, Any]] = deque()
        self._infos: deque[tuple[int, Any]] = deque(maxlen=8)
        self._pose_t: list[int] = []
        self._pose_T: list[np.ndarray] = []
        self._pairs: deque[_Pair] = deque()

    # ------------------------------------------------------------------ inputs
    def add_color(self, stamp_ns: int, msg: Any) -> list[SyncedSet]:
        self._push(self._color, int(stamp_ns), msg, "color")
        return self._run()

    def add_depth(self, stamp_ns: int, msg: Any) -> list[SyncedSet]:
        self._push(self._depth, int(stamp_ns), msg, "depth")
        return self._run()

    def add_info(self, stamp_ns: int, msg: Any) -> list[SyncedSet]:
        self._infos.append((int(stamp_ns), msg))
        return self._run()

    def add_pose(self, stamp_ns: int, T: np.ndarray) -> list[SyncedSet]:
        """A camera-to-world pose (4, 4) at ``stamp_ns``; out-of-order poses are inserted in order."""
        t = int(stamp_ns)
        T = np.asarray(T, dtype=np.float64).reshape(4, 4)
        insert_stamped_pose(self._pose_t, self._pose_T, t, T)
        # keep a bounded history, but always at least two poses
        cut = bisect.bisect_left(self._pose_t, self._pose_t[-1] - self.pose_history_ns)
        cut = min(cut, len(self._pose_t) - 2)
        if cut > 0:
            del self._pose_t[:cut]
            del self._pose_T[:cut]
        return self._run()

    def flush(self) -> list[SyncedSet]:
        """End of stream: settle everything still waiting (pairs with the nearest colour
        image, poses extrapolated only within the slop); drop the rest."""
        out: list[SyncedSet] = []
        while self._depth:
            self._pair_oldest_depth(final=True)
        while self._pairs:
            p = self._pairs[0]
            T = self._pose_for(p.stamp_ns, final=True)
            if T is None or not self._infos:
                self._pairs.popleft()
                self.stats.dropped_no_pose += 1
                continue
            out.append(self._emit(self._pairs.popleft(), T))
        self.stats.dropped_color += len(self._color)
        self._color.clear()
        return out

    @property
    def pending(self) -> int:
        return len(self._color) + len(self._depth) + len(self._pairs)

    # ------------------------------------------------------------------ internals
    def _push(self, q: deque, t: int, msg: Any, what: str) -> None:
        q.append((t, msg))
        while len(q) > self.max_queue:
            q.popleft()
            self.stats.dropped_overflow += 1

    def _pair_oldest_depth(self, final: bool) -> bool:
        """Try to settle the oldest depth image; True when it was settled (paired or dropped)."""
        td, dmsg = self._depth[0]
        # colour images too old to pair with this or any later depth image
        while self._color and self._color[0][0] < td - self.slop_ns:
            self._color.popleft()
            self.stats.dropped_color += 1
        if not final and not (self._color and self._color[-1][0] >= td):
            return False  # a nearer colour image may still come
        best = None
        for i, (tc, _) in enumerate(self._color):
            if best is None or abs(tc - td) < abs(self._color[best][0] - td):
                best = i
            if tc > td:
                break
        self._depth.popleft()
        if best is None or abs(self._color[best][0] - td) > self.slop_ns:
            self.stats.dropped_depth += 1
            return True
        for _ in range(best):  # older colour images can no longer pair (depth comes in order)
            self._color.popleft()
            self.stats.dropped_color += 1
        tc, cmsg = self._color.popleft()
        self._pairs.append(_Pair(td, cmsg, dmsg, tc))
        while len(self._pairs) > self.max_queue:
            self._pairs.popleft()
            self.stats.dropped_overflow += 1
        return True

    def _pose_for(self, t: int, final: bool):
        """T_WC at t; None = drop; 'wait' = not decidable yet."""
        if not self._pose_t:
            return None if final else "wait"
        if t > self._pose_t[-1]:
            if final:
                if t - self._pose_t[-1] <= self.slop_ns:
                    return self._pose_T[-1].copy()
                return None
            return "wait"
        if t < self._pose_t[0]:
            if self._pose_t[0] - t <= self.slop_ns:
                return self._pose_T[0].copy()
            return None
        t0 = self._pose_t[0]  # relative seconds keep float64 precision at wall-clock stamps
        rel = np.asarray([s - t0 for s in self._pose_t], dtype=np.float64) * 1e-9
        return interpolate_pose_at(rel, np.asarray(self._pose_T), (t - t0) * 1e-9, max_gap=self.max_pose_gap_s)

    def _emit(self, p: _Pair, T: np.ndarray) -> SyncedSet:
        ti = [abs(s - p.stamp_ns) for s, _ in self._infos]
        info = self._infos[int(np.argmin(ti))][1]
        self.stats.emitted += 1
        return SyncedSet(stamp_ns=p.stamp_ns, color=p.color, depth=p.depth, info=info, T_WC=T,
                         color_stamp_ns=p.color_stamp_ns)

    def _run(self) -> list[SyncedSet]:
        while self._depth and self._pair_oldest_depth(final=False):
            pass
        out: list[SyncedSet] = []
        while self._pairs and self._infos:
            p = self._pairs[0]
            T = self._pose_for(p.stamp_ns, final=False)
            if isinstance(T, str):
                break
            self._pairs.popleft()
            if T is None:
                self.stats.dropped_no_pose += 1
                continue
            out.append(self._emit(p, T))
        return out


def frame_from_synced(s: SyncedSet, max_width: int | None = None):
    """SyncedSet of converted arrays (color (h,w,3) uint8, depth (H,W) m, info (K, (w,h)), T_WC) -> Frame.

    Resampling as :func:`neural_mapping.frame.frame_from_images` (depth's intrinsics; colour resized
    or sampled at the kept depth pixels; subsampled to at most ``max_width``). ValueError when the
    camera_info describes another size than the depth image, or the frame is unusable.
    """
    from neural_mapping.frame import frame_from_images

    K, (w_info, h_info) = s.info
    H, W = s.depth.shape
    if (w_info, h_info) != (0, 0) and (w_info, h_info) != (W, H):
        raise ValueError(f"depth camera_info is for {w_info}x{h_info} but the depth image is {W}x{H}")
    return frame_from_images(s.color, s.depth, K, s.T_WC, s.stamp_ns, max_width)
