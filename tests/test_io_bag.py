"""rosbag2 bags: synthetic -> bag (mcap, sqlite3) -> reader; foreign encodings, pose types and
rates synchronised; topic detection and its errors."""

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from neural_mapping.camera import R_to_quat, make_T, quat_to_R
from neural_mapping.errors import InputError
from neural_mapping.io.bag import typestore, write_bag
from neural_mapping.io.sources import open_source
from neural_mapping.io.synthetic import synthetic_sequence, write_tiny_bag

TS = typestore()
M = TS.types
MS = 1_000_000
T0 = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(n_frames=6, width=40, height=30, seed=2)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_synthetic_bag_round_trip(seq, tmp_path, storage):
    out = write_bag(seq.frames, tmp_path / "bag", storage=storage)
    assert (out / "metadata.yaml").is_file()
    assert "storage_identifier: " + storage in (out / "metadata.yaml").read_text()
    src = open_source(out)
    assert src.fmt == "bag" and len(src) == 6
    t = src.topics
    assert (t.color, t.depth, t.info, t.pose) == ("/camera/color/image_raw", "/camera/depth/image_raw",
                                                  "/camera/depth/camera_info", "/camera/pose")
    frames = list(src)
    assert len(frames) == 6 and src.skipped == 0
    for a, b in zip(frames, seq.frames):
        assert a.stamp_ns == b.stamp_ns
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.K, b.K)
        assert np.abs(a.depth_m - b.depth_m).max() <= 0.0005 + 1e-6
        assert np.allclose(a.T_WC, b.T_WC, atol=1e-12)


def test_bare_mcap_file_and_tiny_bag_helper(tmp_path):
    out = write_tiny_bag(tmp_path / "tiny", n_frames=3, width=16, height=12)
    mcap = next(out.glob("*.mcap"))
    src = open_source(mcap)
    frames = list(src)
    assert len(frames) == 3 and frames[0].rgb.shape == (12, 16, 3)
    with pytest.raises(InputError, match="already exists"):
        write_bag(frames, out)


def _hdr(t, frame="cam"):
    return M["std_msgs/msg/Header"](stamp=M["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                    frame_id=frame)


def _img(t, arr, enc):
    h, w = arr.shape[:2]
    b = np.ascontiguousarray(arr).reshape(h, -1).view(np.uint8)
    return M["sensor_msgs/msg/Image"](header=_hdr(t), height=h, width=w, encoding=enc, is_bigendian=0,
                                      step=b.shape[1], data=b.reshape(-1))


def _info(t, w, h, K):
    return M["sensor_msgs/msg/CameraInfo"](
        header=_hdr(t), height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1),
        r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0,
        roi=M["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def truth(t_ns):
    """Analytic camera motion: 0.5 m/s along x, 1 rad/s about z."""
    s = (t_ns - T0) * 1e-9
    return make_T(quat_to_R([0, 0, np.sin(s / 2), np.cos(s / 2)]), [0.5 * s, 1.0, 1.5])


def _odom(t):
    T = truth(t)
    q = R_to_quat(T[:3, :3])
    pose = M["geometry_msgs/msg/Pose"](position=M["geometry_msgs/msg/Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                       orientation=M["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    v = M["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return M["nav_msgs/msg/Odometry"](
        header=_hdr(t, "map"), child_frame_id="cam",
        pose=M["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=M["geometry_msgs/msg/TwistWithCovariance"](twist=M["geometry_msgs/msg/Twist"](linear=v, angular=v),
                                                         covariance=np.zeros(36)))


def _write(path, topics_msgs, storage=StoragePlugin.MCAP):
    """topics_msgs: list of (topic, msgtype, [(t, msg), ...])."""
    with Writer(path, version=8, storage_plugin=storage) as w:
        conns = {tp: w.add_connection(tp, ty, typestore=TS) for tp, ty, _ in topics_msgs}
        allm = sorted((t, tp, ty, m) for tp, ty, ms in topics_msgs for t, m in ms)
        for t, tp, ty, m in allm:
            w.write(conns[tp], t, TS.serialize_cdr(m, ty))


def test_foreign_bag_bgr8_32fc1_odometry_jitter(tmp_path):
    """bgr8 colour 5 ms after 32FC1 depth, Odometry at 100 Hz: frames get the depth stamp,
    BGR swapped to RGB, metres kept, and the pose interpolated at the depth stamp."""
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red
    depth_t = [T0 + 100 * MS + k * 100 * MS + 3 * MS for k in range(5)]  # 3 ms off the pose grid
    col = [(t + 5 * MS, _img(t + 5 * MS, rgb[..., ::-1], "bgr8")) for t in depth_t]
    dep = [(t, _img(t, np.full((12, 16), 1.25 + k, np.float32), "32FC1")) for k, t in enumerate(depth_t)]
    inf = [(depth_t[0], _info(depth_t[0], 16, 12, K))]
    odo = [(T0 + k * 10 * MS, _odom(T0 + k * 10 * MS)) for k in range(70)]  # 0 .. 690 ms
    _write(tmp_path / "b", [("/rs/color", "sensor_msgs/msg/Image", col), ("/rs/depth", "sensor_msgs/msg/Image", dep),
                            ("/rs/info", "sensor_msgs/msg/CameraInfo", inf), ("/odom", "nav_msgs/msg/Odometry", odo)])
    src = open_source(tmp_path / "b", slop_s=0.01)
    assert src.topics.pose_type == "nav_msgs/msg/Odometry"
    frames = list(src)
    assert [f.stamp_ns for f in frames] == depth_t
    for k, f in enumerate(frames):
        assert np.all(f.rgb[..., 0] == 200) and np.all(f.rgb[..., 2] == 0)
        assert np.allclose(f.depth_m, 1.25 + k)
        assert np.allclose(f.T_WC, truth(depth_t[k]), atol=1e-9)  # slerp of a constant rate is exact
        assert np.array_equal(f.K, K)
    # with a slop tighter than the 5 ms offset nothing pairs
    tight = open_source(tmp_path / "b", slop_s=0.004)
    assert list(tight) == [] and tight.sync_stats.dropped_depth == 5


def test_topic_detection_errors_and_flags(seq, tmp_path):
    f = seq.frames[0]
    t = f.stamp_ns
    img = _img(t, f.rgb, "rgb8")
    dep = _img(t, (f.depth_m * 1000).astype(np.uint16), "16UC1")
    info = _info(t, f.width, f.height, f.K)
    ps = M["geometry_msgs/msg/PoseStamped"](header=_hdr(t, "map"), pose=M["geometry_msgs/msg/Pose"](
        position=M["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
        orientation=M["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
    I, C, P = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "geometry_msgs/msg/PoseStamped"
    # no image topics at all
    _write(tmp_path / "noimg", [("/info", C, [(t, info)]), ("/pose", P, [(t, ps)])])
    with pytest.raises(InputError, match="no sensor_msgs/Image topics"):
        open_source(tmp_path / "noimg")
    # two colour topics: ambiguous until named
    two = [("/a/color", I, [(t, img)]), ("/b/color", I, [(t, img)]), ("/d/image", I, [(t, dep)]),
           ("/d/camera_info", C, [(t, info)]), ("/a/camera_info", C, [(t, info)]), ("/pose", P, [(t, ps)])]
    _write(tmp_path / "two", two)
    with pytest.raises(InputError, match=r"several colour image topics \(/a/color, /b/color\); name one with --color-topic"):
        open_source(tmp_path / "two")
    src = open_source(tmp_path / "two", color_topic="/b/color")
    assert src.topics.info == "/d/camera_info"  # the camera_info beside the depth topic
    assert len(list(src)) == 1
    with pytest.raises(InputError, match="/nope .*not in the bag"):
        open_source(tmp_path / "two", color_topic="/nope")
    with pytest.raises(InputError, match="is sensor_msgs/msg/CameraInfo, expected"):
        open_source(tmp_path / "two", color_topic="/a/camera_info")
    # no pose topic
    _write(tmp_path / "nopose", [("/c", I, [(t, img)]), ("/d", I, [(t, dep)]), ("/i", C, [(t, info)])])
    with pytest.raises(InputError, match="no pose topics"):
        open_source(tmp_path / "nopose")


def test_bad_bag_files(tmp_path):
    bad = tmp_path / "x.mcap"
    bad.write_bytes(b"not an mcap file at all")
    with pytest.raises(InputError, match="x.mcap: cannot open bag"):
        open_source(bad)
    d = tmp_path / "d"
    d.mkdir()
    (d / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 8\n")
    with pytest.raises(InputError, match="cannot open bag"):
        open_source(d)


def test_size_mismatch_frame_is_skipped_and_counted(seq, tmp_path):
    f0, f1 = seq.frames[0], seq.frames[1]
    I = "sensor_msgs/msg/Image"
    small = np.zeros((10, 10), np.uint16)
    col = [(f.stamp_ns, _img(f.stamp_ns, f.rgb, "rgb8")) for f in (f0, f1)]
    dep = [(f0.stamp_ns, _img(f0.stamp_ns, small, "16UC1")),
           (f1.stamp_ns, _img(f1.stamp_ns, (f1.depth_m * 1000).astype(np.uint16), "16UC1"))]
    info = [(f0.stamp_ns, _info(f0.stamp_ns, f0.width, f0.height, f0.K))]
    poses = [(f.stamp_ns, M["geometry_msgs/msg/PoseStamped"](header=_hdr(f.stamp_ns, "map"), pose=M["geometry_msgs/msg/Pose"](
        position=M["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
        orientation=M["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))) for f in (f0, f1)]
    _write(tmp_path / "b", [("/c", I, col), ("/d", I, dep), ("/i", "sensor_msgs/msg/CameraInfo", info),
                            ("/p", "geometry_msgs/msg/PoseStamped", poses)])
    src = open_source(tmp_path / "b")
    frames = list(src)
    assert len(frames) == 1 and frames[0].stamp_ns == f1.stamp_ns
    assert src.skipped == 1 and "sizes differ" in src.skip_reasons[0]


def _tfmsg(entries):
    """entries: [(t, parent, child, T)] -> tf2_msgs/TFMessage."""
    trs = []
    for t, parent, child, T in entries:
        q = R_to_quat(T[:3, :3])
        trs.append(M["geometry_msgs/msg/TransformStamped"](
            header=_hdr(t, parent), child_frame_id=child,
            transform=M["geometry_msgs/msg/Transform"](
                translation=M["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                rotation=M["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))))
    return M["tf2_msgs/msg/TFMessage"](transforms=trs)


def test_poses_from_tf_tree(tmp_path):
    """map -> base_link on /tf at 50 Hz, base_link -> camera_optical on /tf_static; the frame pose
    is T_map_base(t) @ T_base_cam at the depth stamp, camera = the depth image's frame_id."""
    from neural_mapping.io.tf import TfBuffer

    T_base_cam = make_T(quat_to_R([-0.5, 0.5, -0.5, 0.5]), [0.1, 0.0, 0.3])  # REP-103 body -> optical
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    stamps = [T0 + 50 * MS + k * 70 * MS + 7 * MS for k in range(4)]

    def cam_msgs(enc, arr):
        out = []
        for t in stamps:
            m = _img(t, arr, enc)
            m.header.frame_id = "camera_optical"
            out.append((t, m))
        return out

    tf = [(T0 + k * 20 * MS, _tfmsg([(T0 + k * 20 * MS, "map", "base_link", truth(T0 + k * 20 * MS))]))
          for k in range(20)]
    static = [(T0, _tfmsg([(T0, "base_link", "camera_optical", T_base_cam)]))]
    I = "sensor_msgs/msg/Image"
    _write(tmp_path / "b", [("/c", I, cam_msgs("rgb8", np.zeros((12, 16, 3), np.uint8))),
                            ("/d", I, cam_msgs("16UC1", np.full((12, 16), 2000, np.uint16))),
                            ("/i", "sensor_msgs/msg/CameraInfo", [(stamps[0], _info(stamps[0], 16, 12, K))]),
                            ("/tf", "tf2_msgs/msg/TFMessage", tf), ("/tf_static", "tf2_msgs/msg/TFMessage", static)])
    src = open_source(tmp_path / "b")
    assert src.topics.pose == "/tf"
    frames = list(src)
    assert [f.stamp_ns for f in frames] == stamps  # 50+7+3*70 = 267 ms < 380 ms of TF
    for f in frames:
        assert np.allclose(f.T_WC, truth(f.stamp_ns) @ T_base_cam, atol=1e-9)
        assert np.allclose(f.depth_m, 2.0)
    with pytest.raises(InputError, match="frame 'world' is not in /tf .*base_link.*--map-frame"):
        list(open_source(tmp_path / "b", map_frame="world"))
    # the buffer on its own: inverse lookups, no extrapolation, unknown frames
    buf = TfBuffer()
    buf.add("map", "base", 0, np.eye(4))
    buf.add("map", "base", 10**8, make_T(np.eye(3), [1.0, 0, 0]))
    buf.add("/base", "cam", 0, T_base_cam, static=True)
    T = buf.lookup("cam", "map", 5 * 10**7)
    assert np.allclose(T, np.linalg.inv(make_T(np.eye(3), [0.5, 0, 0]) @ T_base_cam))
    assert buf.lookup("map", "cam", 2 * 10**8) is None and buf.lookup("map", "nowhere", 0) is None


def test_ros1_bag(seq, tmp_path):
    """A ROS 1 .bag (bgr8 colour, 16UC1 depth, CameraInfo with upper-case K, PoseStamped) reads the same way."""
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.typesys import Stores, get_typestore

    ts1 = get_typestore(Stores.ROS1_NOETIC)
    R1 = ts1.types

    def hdr(t, frame):
        return R1["std_msgs/msg/Header"](seq=0, stamp=R1["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                         frame_id=frame)

    def img(t, arr, enc):
        h, w = arr.shape[:2]
        b = np.ascontiguousarray(arr).reshape(h, -1).view(np.uint8)
        return R1["sensor_msgs/msg/Image"](header=hdr(t, "cam"), height=h, width=w, encoding=enc, is_bigendian=0,
                                           step=b.shape[1], data=b.reshape(-1))

    path = tmp_path / "old.bag"
    with Writer1(path) as w:
        types = {"/c": "sensor_msgs/msg/Image", "/d": "sensor_msgs/msg/Image", "/i": "sensor_msgs/msg/CameraInfo",
                 "/p": "geometry_msgs/msg/PoseStamped"}
        conns = {tp: w.add_connection(tp, ty, typestore=ts1) for tp, ty in types.items()}
        for f in seq.frames[:3]:
            t = f.stamp_ns
            q = R_to_quat(f.T_WC[:3, :3])
            p = f.T_WC[:3, 3]
            msgs = {
                "/p": R1["geometry_msgs/msg/PoseStamped"](header=hdr(t, "map"), pose=R1["geometry_msgs/msg/Pose"](
                    position=R1["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                    orientation=R1["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))),
                "/i": R1["sensor_msgs/msg/CameraInfo"](
                    header=hdr(t, "cam"), height=f.height, width=f.width, distortion_model="", D=np.zeros(0),
                    K=f.K.reshape(-1), R=np.eye(3).reshape(-1), P=np.zeros(12), binning_x=0, binning_y=0,
                    roi=R1["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                               do_rectify=False)),
                "/d": img(t, np.round(f.depth_m * 1000).astype(np.uint16), "16UC1"),
                "/c": img(t, f.rgb[..., ::-1], "bgr8"),
            }
            for tp, m in msgs.items():
                w.write(conns[tp], t, ts1.serialize_ros1(m, types[tp]))
    src = open_source(path)
    assert src.fmt == "bag"
    frames = list(src)
    assert len(frames) == 3
    for a, b in zip(frames, seq.frames):
        assert a.stamp_ns == b.stamp_ns and np.array_equal(a.rgb, b.rgb) and np.array_equal(a.K, b.K)
        assert np.allclose(a.T_WC, b.T_WC, atol=1e-12) and np.abs(a.depth_m - b.depth_m).max() <= 0.0005 + 1e-6
