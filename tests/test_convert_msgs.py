"""ROS message -> numpy conversion, on rosbags-deserialised and rclpy messages alike."""

import array

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from neural_mapping.camera import R_to_quat, make_T, quat_to_R
from neural_mapping.ros.convert import (
    camera_info_to_K,
    image_to_depth_m,
    image_to_rgb,
    msgs_to_frame,
    pose_msg_to_T,
    stamp_to_ns,
)

TS = get_typestore(Stores.ROS2_JAZZY)
T_ = TS.types
RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7  # (H=2, W=3, 3)


def header(ns=1_700_000_000_123_456_789, frame="cam"):
    return T_["std_msgs/msg/Header"](stamp=T_["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                     frame_id=frame)


def image(arr: np.ndarray, enc: str, pad: int = 0, bigendian: bool = False):
    h, w = arr.shape[:2]
    a = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.reshape(h, -1).view(np.uint8)
    step = rows.shape[1] + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, : rows.shape[1]] = rows
    return T_["sensor_msgs/msg/Image"](header=header(), height=h, width=w, encoding=enc, is_bigendian=int(bigendian),
                                       step=step, data=buf.reshape(-1))


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_color_encodings(enc):
    if enc == "rgb8":
        src = RGB
    elif enc == "bgr8":
        src = RGB[..., ::-1]
    elif enc == "rgba8":
        src = np.concatenate([RGB, np.full((2, 3, 1), 255, np.uint8)], 2)
    elif enc == "bgra8":
        src = np.concatenate([RGB[..., ::-1], np.full((2, 3, 1), 9, np.uint8)], 2)
    else:
        src = RGB[..., :1]
    out = image_to_rgb(image(np.ascontiguousarray(src), enc, pad=4))  # row padding is skipped
    want = np.repeat(RGB[..., :1], 3, 2) if enc == "mono8" else RGB
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert np.array_equal(out, want)


def test_depth_encodings():
    mm = np.array([[0, 1000, 2500], [65535, 1, 4321]], np.uint16)
    d = image_to_depth_m(image(mm, "16UC1"))
    assert d.dtype == np.float32
    assert np.allclose(d, [[0, 1.0, 2.5], [65.535, 0.001, 4.321]], atol=1e-6)
    d_be = image_to_depth_m(image(mm, "16UC1", bigendian=True))
    assert np.array_equal(d, d_be)
    assert np.array_equal(image_to_depth_m(image(mm, "mono16", pad=2)), d)
    m = np.array([[np.nan, 1.25, -1.0], [np.inf, 0.5, 3.0]], np.float32)
    d = image_to_depth_m(image(m, "32FC1"))
    assert np.array_equal(d, np.array([[0, 1.25, 0], [0, 0.5, 3.0]], np.float32))


def test_malformed_images():
    with pytest.raises(ValueError, match="not a colour encoding"):
        image_to_rgb(image(np.zeros((2, 3), np.uint16), "16UC1"))
    with pytest.raises(ValueError, match="not a depth encoding"):
        image_to_depth_m(image(RGB, "rgb8"))
    with pytest.raises(ValueError, match="unsupported encoding 'yuv422'"):
        image_to_rgb(image(RGB, "yuv422"))
    bad = image(RGB, "rgb8")
    bad.data = bad.data[:-1]  # size mismatch
    with pytest.raises(ValueError, match="17 bytes but height x step = 2 x 9 = 18"):
        image_to_rgb(bad)
    short = image(RGB, "rgb8")
    short.step = 5
    with pytest.raises(ValueError, match="step 5 is smaller"):
        image_to_rgb(short)
    with pytest.raises(ValueError, match="not a sensor_msgs/Image"):
        image_to_rgb(object())


def test_rclpy_messages_too():
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image

    m = Image(height=2, width=3, encoding="rgb8", step=9, data=array.array("B", RGB.tobytes()))
    assert np.array_equal(image_to_rgb(m), RGB)
    m.data = array.array("B", RGB.tobytes()[:-3])
    with pytest.raises(ValueError, match="size|bytes"):
        image_to_rgb(m)
    info = CameraInfo(k=[500.0, 0, 320, 0, 501.0, 240, 0, 0, 1], width=640, height=480)
    assert np.allclose(camera_info_to_K(info), [[500, 0, 320], [0, 501, 240], [0, 0, 1]])
    assert stamp_to_ns(Time(sec=12, nanosec=5)) == 12_000_000_005
    p = PoseStamped()
    p.pose.position.x, p.pose.position.y, p.pose.position.z = 1.0, 2.0, 3.0
    p.pose.orientation.z, p.pose.orientation.w = np.sin(0.25), np.cos(0.25)  # 0.5 rad about z
    T = pose_msg_to_T(p)
    assert np.allclose(T[:3, 3], [1, 2, 3])
    assert np.allclose(T[:2, :2], [[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])


def test_camera_info_and_stamp():
    info = T_["sensor_msgs/msg/CameraInfo"](
        header=header(), height=48, width=64, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([50.0, 0, 31.5, 0, 52.0, 23.5, 0, 0, 1]), r=np.eye(3).ravel(), p=np.zeros(12),
        binning_x=0, binning_y=0,
        roi=T_["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    K = camera_info_to_K(info)
    assert K[0, 0] == 50 and K[1, 1] == 52 and K[0, 2] == 31.5 and K[1, 2] == 23.5
    info.k = np.zeros(9)
    with pytest.raises(ValueError, match="focal lengths must be positive"):
        camera_info_to_K(info)
    info.k = np.ones(6)
    with pytest.raises(ValueError, match="6 values"):
        camera_info_to_K(info)
    assert stamp_to_ns(header().stamp) == 1_700_000_000_123_456_789
    with pytest.raises(ValueError, match="nanosec"):
        stamp_to_ns(T_["builtin_interfaces/msg/Time"](sec=1, nanosec=2_000_000_000))


def _pose_parts(T):
    q = R_to_quat(T[:3, :3])
    P = T_["geometry_msgs/msg/Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3])
    V = T_["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3])
    Q = T_["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])
    return P, V, Q


def test_pose_messages_all_kinds():
    R = quat_to_R([0.1, -0.3, 0.2, 0.9])
    T = make_T(R, [0.5, -1.0, 2.0])
    P, V, Q = _pose_parts(T)
    pose = T_["geometry_msgs/msg/Pose"](position=P, orientation=Q)
    ps = T_["geometry_msgs/msg/PoseStamped"](header=header(frame="map"), pose=pose)
    pwc = T_["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36))
    tw = T_["geometry_msgs/msg/Twist"](linear=V, angular=V)
    odom = T_["nav_msgs/msg/Odometry"](header=header(frame="map"), child_frame_id="cam", pose=pwc,
                                       twist=T_["geometry_msgs/msg/TwistWithCovariance"](twist=tw, covariance=np.zeros(36)))
    tf = T_["geometry_msgs/msg/TransformStamped"](header=header(frame="map"), child_frame_id="cam",
                                                  transform=T_["geometry_msgs/msg/Transform"](translation=V, rotation=Q))
    for m in (pose, ps, odom, tf):
        assert np.allclose(pose_msg_to_T(m), T, atol=1e-12)
    bad = T_["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=0.0)
    with pytest.raises(ValueError, match="zero length"):
        pose_msg_to_T(T_["geometry_msgs/msg/Pose"](position=P, orientation=bad))
    with pytest.raises(ValueError, match="not unit length"):
        pose_msg_to_T(T_["geometry_msgs/msg/Pose"](position=P, orientation=T_["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=2.0)))
    with pytest.raises(ValueError, match="not a pose message"):
        pose_msg_to_T(header())


def test_msgs_to_frame_checks_sizes():
    rgb = image(RGB, "rgb8")
    depth = image(np.full((2, 3), 1500, np.uint16), "16UC1")
    info = T_["sensor_msgs/msg/CameraInfo"](
        header=header(), height=2, width=3, distortion_model="", d=np.zeros(0),
        k=np.array([2.0, 0, 1, 0, 2.0, 0.5, 0, 0, 1]), r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=T_["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    f = msgs_to_frame(rgb, depth, info, np.eye(4))
    assert f.stamp_ns == 1_700_000_000_123_456_789 and np.allclose(f.depth_m, 1.5) and np.array_equal(f.rgb, RGB)
    with pytest.raises(ValueError, match="sizes differ"):
        msgs_to_frame(rgb, image(np.zeros((3, 3), np.uint16), "16UC1"), info, np.eye(4))
    info.width = 4
    with pytest.raises(ValueError, match="camera info is for 4x2"):
        msgs_to_frame(rgb, depth, info, np.eye(4))
