"""ROS messages -> numpy (the input edge). Pure functions, no rclpy import.

Duck-typed on message attributes, so the same functions read messages deserialised
by ``rosbags`` (no ROS install) and messages received through rclpy:

  sensor_msgs/Image        -> image_to_rgb (rgb8/bgr8/rgba8/bgra8/mono8 -> (H, W, 3) uint8)
                           -> image_to_depth_m (16UC1/mono16 millimetres or 32FC1 metres -> (H, W) float32 m)
  sensor_msgs/CameraInfo   -> camera_info_to_K (3, 3)
  PoseStamped / Pose / Odometry / PoseWithCovarianceStamped / TransformStamped / Transform
                           -> pose_msg_to_T (4, 4) (T_map_camera when the message is the camera in map)
  builtin_interfaces/Time  -> stamp_to_ns

Each raises ValueError with a message saying what is wrong (wrong encoding, a data
buffer whose size does not match height x step, non-finite values, ...).
"""

from __future__ import annotations

import numpy as np

from neural_mapping.camera import make_T, quat_to_R
from neural_mapping.frame import Frame, FrameError

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3", "8UC1")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")

# encoding -> (numpy dtype, channels)
_LAYOUT = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "8UC3": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "16UC1": (np.uint16, 1),
    "mono16": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> integer nanoseconds."""
    try:
        sec, nsec = int(stamp.sec), int(stamp.nanosec)
    except AttributeError:
        raise ValueError(f"not a time stamp (needs sec and nanosec): {type(stamp).__name__}") from None
    if not 0 <= nsec < 1_000_000_000:
        raise ValueError(f"time stamp nanosec {nsec} is outside [0, 1e9)")
    return sec * 1_000_000_000 + nsec


def _image_array(msg, what: str) -> tuple[np.ndarray, str]:
    """(H, W, C) array viewing an Image message's data, validated; and its encoding."""
    try:
        enc, h, w, step = str(msg.encoding), int(msg.height), int(msg.width), int(msg.step)
        data = msg.data
    except AttributeError as e:
        raise ValueError(f"{what}: not a sensor_msgs/Image ({e})") from None
    if enc not in _LAYOUT:
        raise ValueError(f"{what}: unsupported encoding {enc!r}")
    dtype, ch = _LAYOUT[enc]
    dt = np.dtype(dtype).newbyteorder(">" if int(getattr(msg, "is_bigendian", 0)) else "<")
    if h <= 0 or w <= 0:
        raise ValueError(f"{what}: empty image {w}x{h}")
    row = w * ch * dt.itemsize
    if step < row:
        raise ValueError(f"{what}: step {step} is smaller than width x pixel size = {row} for {enc} {w}x{h}")
    if isinstance(data, np.ndarray):
        buf = data.reshape(-1).view(np.uint8)
    else:
        try:
            buf = np.frombuffer(data, dtype=np.uint8)
        except TypeError:
            buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    if buf.size != step * h:
        raise ValueError(f"{what}: data has {buf.size} bytes but height x step = {h} x {step} = {h * step} ({enc} {w}x{h})")
    rows = buf.reshape(h, step)[:, :row]
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch)
    return arr.astype(dt.newbyteorder("="), copy=False), enc


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8; 8UC3 read as bgr8) -> (H, W, 3) uint8 RGB."""
    arr, enc = _image_array(msg, "color image")
    if enc not in COLOR_ENCODINGS:
        raise ValueError(f"color image: encoding {enc!r} is not a colour encoding (expected one of {', '.join(COLOR_ENCODINGS)})")
    if enc in ("bgr8", "8UC3", "bgra8"):
        arr = arr[..., [2, 1, 0]]
    elif enc == "rgba8":
        arr = arr[..., :3]
    elif enc in ("mono8", "8UC1"):
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def image_to_depth_m(msg, mm_scale: float = 0.001) -> np.ndarray:
    """sensor_msgs/Image (16UC1/mono16 millimetres, or 32FC1 metres) -> (H, W) float32 metres, 0 = invalid.

    NaN, inf and negative values become 0 (invalid). ``mm_scale`` converts the
    integer encodings to metres.
    """
    arr, enc = _image_array(msg, "depth image")
    if enc not in DEPTH_ENCODINGS:
        raise ValueError(f"depth image: encoding {enc!r} is not a depth encoding (expected one of {', '.join(DEPTH_ENCODINGS)})")
    if enc == "32FC1":
        d = arr[..., 0].astype(np.float32)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    return (arr[..., 0].astype(np.float32) * np.float32(mm_scale)).astype(np.float32)


def camera_info_to_K(msg) -> np.ndarray:
    """sensor_msgs/CameraInfo -> (3, 3) float64 intrinsics (from ``k``, or ROS 1 ``K``)."""
    k = getattr(msg, "k", None)
    if k is None:
        k = getattr(msg, "K", None)
    if k is None:
        raise ValueError(f"camera info: not a sensor_msgs/CameraInfo (no k): {type(msg).__name__}")
    K = np.asarray(k, dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise ValueError(f"camera info: k has {K.size} values, expected 9")
    K = K.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise ValueError("camera info: k has non-finite values")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"camera info: focal lengths must be positive, got fx={K[0, 0]} fy={K[1, 1]} (uncalibrated camera?)")
    return K


def camera_info_size(msg) -> tuple[int, int]:
    """(width, height) a CameraInfo describes."""
    return int(msg.width), int(msg.height)


def _tq_to_T(t, q, what: str) -> np.ndarray:
    try:
        tv = np.array([t.x, t.y, t.z], dtype=np.float64)
        qv = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    except AttributeError as e:
        raise ValueError(f"{what}: missing a field ({e})") from None
    if not (np.all(np.isfinite(tv)) and np.all(np.isfinite(qv))):
        raise ValueError(f"{what}: non-finite translation or rotation")
    n = np.linalg.norm(qv)
    if n < 1e-6:
        raise ValueError(f"{what}: rotation quaternion has zero length")
    if abs(n - 1.0) > 1e-2:
        raise ValueError(f"{what}: rotation quaternion is not unit length (|q| = {n:.4g})")
    return make_T(quat_to_R(qv), tv)


def pose_msg_to_T(msg) -> np.ndarray:
    """(4, 4) transform from PoseStamped, Pose, Odometry, PoseWithCovariance(Stamped),
    TransformStamped or Transform. For TransformStamped it is T_{header.frame_id, child_frame_id}."""
    if hasattr(msg, "transform"):  # TransformStamped
        tr = msg.transform
        return _tq_to_T(tr.translation, tr.rotation, "transform")
    if hasattr(msg, "translation") and hasattr(msg, "rotation"):  # Transform
        return _tq_to_T(msg.translation, msg.rotation, "transform")
    if hasattr(msg, "position") and hasattr(msg, "orientation"):  # Pose
        return _tq_to_T(msg.position, msg.orientation, "pose")
    p = getattr(msg, "pose", None)
    if p is not None:
        if hasattr(p, "pose"):  # Odometry / PoseWithCovarianceStamped: pose.pose
            p = p.pose
        if hasattr(p, "position") and hasattr(p, "orientation"):
            return _tq_to_T(p.position, p.orientation, "pose")
    raise ValueError(f"not a pose message (PoseStamped, Odometry, TransformStamped, ...): {type(msg).__name__}")


def msgs_to_frame(color_msg, depth_msg, info_msg, T_WC: np.ndarray, stamp_ns: int | None = None,
                  mm_scale: float = 0.001) -> Frame:
    """A Frame from a synchronised color/depth/camera_info set and a camera-to-world pose.

    ValueError when sizes disagree (depth must be registered to colour) or a message
    is malformed. ``stamp_ns`` defaults to the depth image's stamp.
    """
    rgb = image_to_rgb(color_msg)
    depth = image_to_depth_m(depth_msg, mm_scale)
    if rgb.shape[:2] != depth.shape:
        raise ValueError(f"color {rgb.shape[1]}x{rgb.shape[0]} and depth {depth.shape[1]}x{depth.shape[0]} sizes differ "
                         "(depth must be registered to colour)")
    K = camera_info_to_K(info_msg)
    w, h = camera_info_size(info_msg)
    if (w, h) != (0, 0) and (w, h) != (depth.shape[1], depth.shape[0]):
        raise ValueError(f"camera info is for {w}x{h} but the images are {depth.shape[1]}x{depth.shape[0]}")
    if stamp_ns is None:
        stamp_ns = stamp_to_ns(depth_msg.header.stamp)
    try:
        return Frame(rgb=rgb, depth_m=depth, K=K, T_WC=np.asarray(T_WC, dtype=np.float64), stamp_ns=int(stamp_ns))
    except FrameError as e:
        raise ValueError(str(e)) from None
