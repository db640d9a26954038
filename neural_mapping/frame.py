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


# ----------------------------------------------------------------------------- resampling at the edge


def resize_nearest(img: np.ndarray, H: int, W: int) -> np.ndarray:
    """Nearest-neighbour resize of (h, w, ...) to (H, W, ...) by pixel-centre sampling."""
    h, w = img.shape[:2]
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return np.ascontiguousarray(img[rows][:, cols])


def input_stride(width: int, max_width: int | None) -> int:
    """Smallest integer stride that makes an image ``width`` px wide at most ``max_width`` px (None: 1)."""
    if not max_width or max_width <= 0 or width <= max_width:
        return 1
    return -(-int(width) // int(max_width))


def frame_from_images(rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray, T_WC: np.ndarray, stamp_ns: int = 0,
                      max_width: int | None = None) -> Frame:
    """A Frame from a colour image (h, w, 3) uint8 of any size and a depth image (H, W) with its intrinsics K.

    Depth's intrinsics are used; a colour image of another size is resized to depth. ``max_width``:
    depth wider than this is subsampled by the smallest integer stride s that brings it within
    (every s-th pixel from the first, ``camera.stride_intrinsics``, so each kept pixel keeps its ray)
    and colour is sampled at the centres of the kept depth pixels. FrameError when unusable.
    """
    from neural_mapping.camera import stride_intrinsics

    H, W = depth_m.shape[:2]
    st = input_stride(W, max_width)
    if st > 1:
        depth_m = np.ascontiguousarray(depth_m[::st, ::st])
        K = stride_intrinsics(K, st)
        h, w = rgb.shape[:2]
        Hs, Ws = depth_m.shape
        if (h, w) == (H, W):
            rgb = np.ascontiguousarray(rgb[::st, ::st])
        else:  # colour at the centres of the kept depth pixels
            rows = np.minimum(((np.arange(Hs) * st + 0.5) * h / H).astype(np.int64), h - 1)
            cols = np.minimum(((np.arange(Ws) * st + 0.5) * w / W).astype(np.int64), w - 1)
            rgb = np.ascontiguousarray(rgb[rows][:, cols])
    elif rgb.shape[:2] != (H, W):
        rgb = resize_nearest(rgb, H, W)
    return Frame(rgb=rgb, depth_m=depth_m, K=K, T_WC=T_WC, stamp_ns=int(stamp_ns))
