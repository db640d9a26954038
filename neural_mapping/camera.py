"""Pinhole camera, rays, back-projection and SE(3) helpers.

Conventions (said once, used everywhere):
- Camera axes are OpenCV: x right, y down, z forward (optical axis).
- ``T_AB`` is a 4x4 homogeneous transform taking points in frame B to frame A,
  so ``T_WC`` takes camera points to world (map) points: ``p_W = T_WC @ p_C``.
- Quaternions are ``(x, y, z, w)`` as in ROS messages and TUM files.
- Depth is the z coordinate in the camera frame (not the ray length).
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

# ----------------------------------------------------------------------------- intrinsics


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 pinhole matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float, *, keep: str = "corner") -> np.ndarray:
    """Intrinsics of an image whose pixel coordinates are scaled by (sx, sy): the one implementation.

    Pixel coordinates are OpenCV's: the centre of pixel (u, v) is at (u, v), so a W-wide image
    spans [-0.5, W - 0.5]. ``keep`` names the point the scaling leaves in place:

    - ``"corner"`` (a resize sampled at pixel centres: ``resize_nearest``, a view rendered at another
      size): the image corner (-0.5, -0.5) stays, ``u' = (u + 0.5) * sx - 0.5``;
    - ``"first_pixel"`` (strided subsampling, every s-th pixel from the first, ``sx = sy = 1/s``: see
      :func:`stride_intrinsics`): the centre of pixel (0, 0) stays, ``u' = u * sx``, so each kept
      pixel keeps its ray.

    Rows 0 and 1 (focal lengths, skew, principal point) scale by sx and sy; row 2 is unchanged.
    """
    if keep not in ("corner", "first_pixel"):
        raise ValueError(f"keep must be 'corner' or 'first_pixel', got {keep!r}")
    K2 = np.array(K, dtype=np.float64, copy=True)
    K2[0] *= sx
    K2[1] *= sy
    if keep == "corner":
        K2[0, 2] += 0.5 * (sx - 1.0)
        K2[1, 2] += 0.5 * (sy - 1.0)
    return K2


def stride_intrinsics(K: np.ndarray, stride: int) -> np.ndarray:
    """Intrinsics of ``image[::stride, ::stride]``: pixel (s*i, s*j) of the image is pixel (i, j) of the result."""
    return scale_intrinsics(K, 1.0 / stride, 1.0 / stride, keep="first_pixel")


# ----------------------------------------------------------------------------- SE(3)


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 transform from a 3x3 rotation and a translation."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform."""
    R = T[:3, :3]
    t = T[:3, 3]
    return make_T(R.T, -R.T @ t)


def quat_to_R(q_xyzw) -> np.ndarray:
    """Rotation matrix from a (x, y, z, w) quaternion (normalised here)."""
    x, y, z, w = np.asarray(q_xyzw, dtype=np.float64) / np.linalg.norm(q_xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def R_to_quat(R: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion with w >= 0 from a rotation matrix."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w = 0.25 * s
        x = (R[2, 1] - R[1, 2]) / s
        y = (R[0, 2] - R[2, 0]) / s
        z = (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        w = (R[2, 1] - R[1, 2]) / s
        x = 0.25 * s
        y = (R[0, 1] + R[1, 0]) / s
        z = (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        w = (R[0, 2] - R[2, 0]) / s
        x = (R[0, 1] + R[1, 0]) / s
        y = 0.25 * s
        z = (R[1, 2] + R[2, 1]) / s
    else:
        s = np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        w = (R[1, 0] - R[0, 1]) / s
        x = (R[0, 2] + R[2, 0]) / s
        y = (R[1, 2] + R[2, 1]) / s
        z = 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def pose_to_T(t_xyz, q_xyzw) -> np.ndarray:
    """4x4 transform from a translation and a (x, y, z, w) quaternion."""
    return make_T(quat_to_R(q_xyzw), t_xyz)


def slerp(q0, q1, u: float) -> np.ndarray:
    """Spherical linear interpolation of (x, y, z, w) quaternions, u in [0, 1]."""
    q0 = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + u * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(np.clip(d, -1.0, 1.0))
    return (np.sin((1 - u) * th) * q0 + np.sin(u * th) * q1) / np.sin(th)


def interpolate_T(T0: np.ndarray, T1: np.ndarray, u: float) -> np.ndarray:
    """Pose between T0 (u=0) and T1 (u=1): linear translation, slerp rotation."""
    q = slerp(R_to_quat(T0[:3, :3]), R_to_quat(T1[:3, :3]), u)
    t = (1 - u) * T0[:3, 3] + u * T1[:3, 3]
    return make_T(quat_to_R(q), t)


def insert_stamped_pose(stamps: list, poses: list, stamp, T) -> None:
    """Insert ``T`` at ``stamp`` into the parallel sorted lists; a pose at an existing stamp replaces it."""
    i = bisect.bisect_left(stamps, stamp)
    if i < len(stamps) and stamps[i] == stamp:
        poses[i] = T
    else:
        stamps.insert(i, stamp)
        poses.insert(i, T)


def interpolate_pose_at(stamps: np.ndarray, poses: np.ndarray, t: float, max_gap: float | None = None):
    """Pose at time ``t`` from sorted ``stamps`` (N,) and ``poses`` (N, 4, 4).

    Interpolates between the bracketing stamps; returns None when ``t`` is outside
    [stamps[0], stamps[-1]] or the bracketing gap exceeds ``max_gap``.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    if len(stamps) == 0 or t < stamps[0] or t > stamps[-1]:
        return None
    i = int(np.searchsorted(stamps, t, side="right"))
    if i >= len(stamps):
        return np.array(poses[-1], dtype=np.float64)
    if stamps[i - 1] == t:
        return np.array(poses[i - 1], dtype=np.float64)
    t0, t1 = stamps[i - 1], stamps[i]
    if max_gap is not None and t1 - t0 > max_gap:
        return None
    return interpolate_T(poses[i - 1], poses[i], (t - t0) / (t1 - t0))


# ----------------------------------------------------------------------------- rays / points


def backproject_depth(depth_m: np.ndarray, K: np.ndarray, T_WC: np.ndarray | None = None, stride: int = 1) -> np.ndarray:
    """Points (N, 3) of the valid depth pixels, in the camera frame or world if T_WC is given."""
    d = depth_m[::stride, ::stride]
    v, u = np.nonzero(d > 0)
    z = d[v, u].astype(np.float64)
    u = u * stride
    v = v * stride
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    pts_C = np.stack([x, y, z], axis=1)
    if T_WC is None:
        return pts_C
    return pts_C @ T_WC[:3, :3].T + T_WC[:3, 3]


def pixel_dirs_C(K: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Camera-frame ray directions (N, 3) with z = 1 for pixel coordinates u, v (N,).

    Because z = 1, ``origin + depth * dir`` is the point at that depth.
    """
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def rays_W(T_WC: torch.Tensor, dirs_C: torch.Tensor):
    """World-frame ray origins (N, 3) and directions (N, 3, z-scaled, not unit)."""
    if T_WC.dim() == 2:
        dirs_W = dirs_C @ T_WC[:3, :3].T
        origins_W = T_WC[:3, 3].expand_as(dirs_W)
    else:  # (N, 4, 4) one pose per ray
        dirs_W = torch.einsum("nij,nj->ni", T_WC[:, :3, :3], dirs_C)
        origins_W = T_WC[:, :3, 3]
    return origins_W, dirs_W


def image_rays_W(T_WC, K, H: int, W: int, device=None, dtype=torch.float32):
    """Rays for every pixel of an HxW image: origins (H*W, 3), dirs (H*W, 3) with z-depth scale 1."""
    T = torch.as_tensor(np.asarray(T_WC), dtype=dtype, device=device)
    Kt = torch.as_tensor(np.asarray(K), dtype=dtype, device=device)
    v, u = torch.meshgrid(
        torch.arange(H, device=device, dtype=dtype), torch.arange(W, device=device, dtype=dtype), indexing="ij"
    )
    dirs_C = pixel_dirs_C(Kt, u.reshape(-1), v.reshape(-1))
    return rays_W(T, dirs_C)
