"""Products/numpy -> ROS messages, checked through real CDR serialisation round trips."""

import numpy as np
import open3d as o3d
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from neural_mapping.ros import convert, convert_out as co


def roundtrip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def test_mesh_marker_triangles_and_colours_round_trip():
    from visualization_msgs.msg import Marker

    mesh = o3d.geometry.TriangleMesh()
    V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 2.5]], float)
    F = np.array([[0, 1, 2], [0, 2, 3]])
    C = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    mesh.vertices = o3d.utility.Vector3dVector(V)
    mesh.triangles = o3d.utility.Vector3iVector(F)
    mesh.vertex_colors = o3d.utility.Vector3dVector(C)
    m = roundtrip(co.mesh_to_marker(mesh, "map", 1_500_000_001))
    assert m.type == Marker.TRIANGLE_LIST and m.action == Marker.ADD
    assert m.header.frame_id == "map" and m.header.stamp.sec == 1 and m.header.stamp.nanosec == 500_000_001
    np.testing.assert_allclose(co.marker_triangles(m), V[F])
    cols = np.array([[c.r, c.g, c.b, c.a] for c in m.colors])
    np.testing.assert_allclose(cols[:, :3], C[F.reshape(-1)], atol=1e-6)
    assert np.all(cols[:, 3] == 1.0)
    assert m.pose.orientation.w == 1.0 and m.scale.x == 1.0


def test_empty_mesh_is_a_delete_marker():
    from visualization_msgs.msg import Marker

    m = co.mesh_to_marker(o3d.geometry.TriangleMesh(), "map")
    assert m.action == Marker.DELETE and len(m.points) == 0


def test_occupancy_grid_layout_matches_the_slice():
    from neural_mapping.products import OccupancySlice

    data = np.full((3, 4), -1, np.int8)  # rows = y, cols = x
    data[0, 1] = 100  # x in [-1.9, -1.8], y in [0.5, 0.6]
    data[2, 3] = 0
    sl = OccupancySlice(data=data, origin_xy=np.array([-2.0, 0.5]), resolution=0.1, z_min=0.1, z_max=1.5)
    g = roundtrip(co.occupancy_to_msg(sl, "map", 5, z_m=0.1))
    assert (g.info.width, g.info.height) == (4, 3) and g.info.resolution == pytest.approx(0.1)
    assert co.occupancy_cell_value(g, -1.85, 0.55) == 100
    assert co.occupancy_cell_value(g, -1.65, 0.75) == 0
    assert co.occupancy_cell_value(g, -1.95, 0.55) == -1
    assert co.occupancy_cell_value(g, -2.05, 0.55) is None
    assert list(g.data) == data.reshape(-1).tolist()


def test_point_cloud_with_distance_round_trip():
    pts = np.array([[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0]])
    d = np.array([0.5, -0.125])
    msg = roundtrip(co.points_to_cloud(pts, "map", 0, d, "distance"))
    assert [f.name for f in msg.fields] == ["x", "y", "z", "distance"]
    assert msg.width == 2 and msg.point_step == 16 and msg.row_step == 32
    arr = co.cloud_to_array(msg)
    np.testing.assert_allclose(arr[:, :3], pts)
    np.testing.assert_allclose(arr[:, 3], d)
    with pytest.raises(ValueError):
        co.points_to_cloud(pts, "map", 0, np.zeros(3))


def test_images_and_camera_info_round_trip_through_the_input_conversion():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    depth = rng.random((5, 7)).astype(np.float32) * 4
    img = roundtrip(co.rgb_to_image(rgb, "cam", 3))
    assert img.encoding == "rgb8" and img.step == 21
    np.testing.assert_array_equal(convert.image_to_rgb(img), rgb)
    fimg = co.rgb_to_image(np.array([[[0.0, 0.5, 1.0]]], np.float32), "cam")
    assert list(fimg.data) == [0, 128, 255]
    dmsg = roundtrip(co.depth_to_image(depth, "cam", 3))
    assert dmsg.encoding == "32FC1"
    np.testing.assert_array_equal(convert.image_to_depth_m(dmsg), depth)
    K = np.array([[100.0, 0, 3.5], [0, 101.0, 2.0], [0, 0, 1]])
    info = roundtrip(co.camera_info_msg(K, 5, 7, "cam"))
    np.testing.assert_allclose(convert.camera_info_to_K(info), K)
    assert (info.width, info.height) == (7, 5) and list(info.p)[:3] == [100.0, 0.0, 3.5]


def test_pose_round_trip_and_bad_pose():
    from geometry_msgs.msg import Pose

    from neural_mapping.camera import make_T, quat_to_R

    T = make_T(quat_to_R(np.array([0.1, -0.2, 0.3, 0.9]) / np.linalg.norm([0.1, -0.2, 0.3, 0.9])), [1.0, -2.0, 0.5])
    np.testing.assert_allclose(co.pose_to_T(roundtrip(co.T_to_pose(T))), T, atol=1e-12)
    p = Pose()
    p.orientation.w = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        co.pose_to_T(p)
    p.orientation.w = 0.0
    with pytest.raises(ValueError, match="zero"):
        co.pose_to_T(p)


def test_diagnostics_round_trip_and_levels():
    from diagnostic_msgs.msg import DiagnosticStatus

    st = co.NodeStatus(device="cpu", state="mapping", frames_received=10, frames_added=9, frames_rejected=1,
                       dropped_queue_full=2, dropped_malformed=0, dropped_no_pose=1, dropped_unsynced=3, dropped_paused=0,
                       queue_length=4, keyframes=5, steps=100, steps_per_s=12.5, loss=0.25, memory_mb=800.0,
                       gpu_memory_mb=0.0)
    arr = roundtrip(co.status_to_diagnostics(st, "neural_mapper", "/neural_mapper", 7))
    assert arr.status[0].level == DiagnosticStatus.OK
    assert co.diagnostics_to_status(arr) == st
    st.dropped_malformed = 3
    assert co.status_to_diagnostics(st, "n", "h").status[0].level == DiagnosticStatus.WARN
    st.state = "error: training: boom"
    assert co.status_to_diagnostics(st, "n", "h").status[0].level == DiagnosticStatus.ERROR


def test_vectors_and_float_arrays():
    v = np.array([[1.0, 2.0, 3.0], [-0.5, 0.0, 0.25]])
    out = co.vectors_msgs(v)
    assert [(a.x, a.y, a.z) for a in out] == [tuple(r) for r in v.tolist()]
    a = co.float32_array(np.array([0.5, -1.25]))
    assert a.typecode == "f" and list(a) == [0.5, -1.25]
