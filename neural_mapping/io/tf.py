"""A small TF buffer for offline bags (no tf2_ros): /tf and /tf_static -> T_target_source(t).

Each child frame has one parent (a tree, as in TF). Static edges hold for all times;
dynamic edges are interpolated between the bracketing stamps of that edge (linear
translation, slerp rotation); a lookup outside an edge's stamps, or across a gap wider
than ``max_gap_s``, fails (None), as tf2 does (no extrapolation).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from neural_mapping.camera import insert_stamped_pose, interpolate_T, invert_T


@dataclass
class _Edge:
    parent: str
    static: np.ndarray | None = None  # (4, 4) T_parent_child when static
    stamps: list[int] = field(default_factory=list)  # ns, sorted
    poses: list[np.ndarray] = field(default_factory=list)  # (4, 4) T_parent_child


class TfBuffer:
    def __init__(self, max_gap_s: float = 0.5):
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._edges: dict[str, _Edge] = {}  # child -> edge

    @staticmethod
    def _strip(frame: str) -> str:
        return frame[1:] if frame.startswith("/") else frame

    def add(self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray, static: bool = False) -> None:
        parent, child = self._strip(parent), self._strip(child)
        e = self._edges.get(child)
        if e is None or e.parent != parent:
            e = self._edges[child] = _Edge(parent=parent)  # a re-parented frame starts afresh
        T = np.asarray(T_parent_child, dtype=np.float64)
        if static:
            e.static = T
            return
        insert_stamped_pose(e.stamps, e.poses, stamp_ns, T)

    def frames(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def _edge_at(self, child: str, t: int) -> np.ndarray | None:
        e = self._edges[child]
        if e.static is not None:
            return e.static
        s = e.stamps
        if not s or t < s[0] or t > s[-1]:
            return None
        i = bisect.bisect_left(s, t)
        if s[i] == t:
            return e.poses[i]
        if s[i] - s[i - 1] > self.max_gap_ns:
            return None
        return interpolate_T(e.poses[i - 1], e.poses[i], (t - s[i - 1]) / (s[i] - s[i - 1]))

    def _chain(self, frame: str) -> list[str]:
        out = [frame]
        seen = {frame}
        while out[-1] in self._edges:
            p = self._edges[out[-1]].parent
            if p in seen:
                break  # a loop in malformed data
            out.append(p)
            seen.add(p)
        return out

    def lookup(self, target: str, source: str, t: int) -> np.ndarray | None:
        """T_target_source (4, 4) at time t (ns), or None when not connected / not available."""
        target, source = self._strip(target), self._strip(source)
        if target == source:
            return np.eye(4)
        up_s, up_t = self._chain(source), self._chain(target)
        common = next((f for f in up_s if f in set(up_t)), None)
        if common is None:
            return None
        T_common_source = self._compose(up_s[: up_s.index(common)], t)
        T_common_target = self._compose(up_t[: up_t.index(common)], t)
        if T_common_source is None or T_common_target is None:
            return None
        return invert_T(T_common_target) @ T_common_source

    def _compose(self, children: list, t: int) -> np.ndarray | None:
        """T_ancestor_child along a chain of frames (child first) at time t; None if an edge is missing."""
        T_acc = np.eye(4)
        for child in children:
            T = self._edge_at(child, t)
            if T is None:
                return None
            T_acc = T @ T_acc
        return T_acc
