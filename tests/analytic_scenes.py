"""Analytic RGB-D scenes for the core's tests: depth computed exactly from rays."""

from __future__ import annotations

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
