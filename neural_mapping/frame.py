"""The one input type of the core: an RGB-D frame with intrinsics and pose.

Camera axes are OpenCV (x right, y down, z forward); ``T_WC`` maps camera
coordinates to world (map) coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class FrameError(ValueError):
    """A frame that cannot be used (wrong shapes, bad intrinsics, bad pose)."""


@dataclass
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_m: np.ndarray  # (H, W) float32 metres, 0 = invalid
    K: np.ndarray  # (3, 3) float64 pinhole intrinsics
    T_WC: np.ndarray  # (4, 4) float64 camera-to-world, OpenCV axes
    stamp_ns: int = 0
    #: number of depth pixels that were NaN/inf/negative and were set to 0.
    n_invalid_fixed: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def height(self) -> int:
        return int(self.depth_m.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth_m.shape[1])

    def validate(self) -> None:
        """Check shapes, dtypes, intrinsics and pose; sanitise invalid depth.

        Raises FrameError with a message naming what is wrong.
        NaN/inf/negative depth values become 0 (invalid) and are counted in
        ``n_invalid_fixed``; they are not an error.
        """
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise FrameError(f"rgb must be HxWx3, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            raise FrameError(f"rgb must be uint8, got {rgb.dtype}")
        depth = np.asarray(self.depth_m)
        if depth.ndim != 2:
            raise FrameError(f"depth_m must be HxW, got shape {depth.shape}")
        if depth.dtype != np.float32:
            raise FrameError(f"depth_m must be float32 metres, got {depth.dtype}")
        if depth.shape != rgb.shape[:2]:
            raise FrameError(f"rgb {rgb.shape[:2]} and depth {depth.shape} sizes differ")
        K = np.array(self.K, dtype=np.float64)  # a copy: sources may hand read-only buffers
        if K.shape != (3, 3):
            raise FrameError(f"K must be 3x3, got shape {K.shape}")
        if not np.all(np.isfinite(K)):
            raise FrameError("K has non-finite entries")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise FrameError(f"K must have positive focal lengths, got fx={K[0, 0]} fy={K[1, 1]}")
        T = np.array(self.T_WC, dtype=np.float64)
        if T.shape != (4, 4):
            raise FrameError(f"T_WC must be 4x4, got shape {T.shape}")
        if not np.all(np.isfinite(T)):
            raise FrameError("T_WC has non-finite entries")
        R = T[:3, :3]
        err = np.abs(R.T @ R - np.eye(3)).max()
        if err > 1e-3 or np.linalg.det(R) < 0:
            raise FrameError(f"T_WC rotation is not orthonormal (max |R^T R - I| = {err:.2g})")
        if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
            raise FrameError(f"T_WC last row must be [0 0 0 1], got {T[3]}")
        bad = ~np.isfinite(depth) | (depth < 0)
        n_bad = int(bad.sum())
        if n_bad:
            depth = depth.copy()
            depth[bad] = 0.0
        self.rgb = np.ascontiguousarray(rgb)
        self.depth_m = np.ascontiguousarray(depth)
        self.K = K
        self.T_WC = T
        self.stamp_ns = int(self.stamp_ns)
        self.n_invalid_fixed += n_bad

    @property
    def n_valid_depth(self) -> int:
        return int((self.depth_m > 0).sum())
