"""Integration: the node as a subprocess, real rclpy over DDS from this process.

The test publishes a synthetic room sequence (ground truth known), waits for training,
then checks the products against the ground-truth mesh, calls every service and
checks values, changes parameters at runtime, and sends malformed messages.
Tests of this module run in order and share one node (module fixture).
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import open3d as o3d
import pytest

from ros_harness import Client, NodeProcess, frame_messages, status_of

N_FRAMES = 24  # mapped at start
N_LATE = 4  # sent after the malformed messages
MIN_STEPS = 100
Z_MIN, Z_MAX, RES = 0.1, 1.5, 0.1


@pytest.fixture(scope="module")
def scene():
    from neural_mapping.io.synthetic import Renderer, scene_parts, synthetic_sequence

    seq = synthetic_sequence(n_frames=N_FRAMES + N_LATE, width=160, height=120, seed=0)
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(seq.mesh))
    return {"seq": seq, "raycast": rc, "renderer": Renderer(seq.mesh), "parts": scene_parts()}


@pytest.fixture(scope="module")
def env():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(random.randint(1, 200)))
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        mp.setenv("ROS_LOCALHOST_ONLY", "1")
        yield dict(os.environ)


@pytest.fixture(scope="module")
def live(scene, env, tmp_path_factory):
    """Node running, the first N_FRAMES integrated and trained for MIN_STEPS steps."""
    tmp = tmp_path_factory.mktemp("ros_node")
    params = {
        "preset": "cpu", "encoding.hash_log2_table": 14, "train.rays_per_step": 1024,
        "render.render_samples": 32, "mesh.voxel_m": 0.1,
        "occupancy.resolution_m": RES, "occupancy.z_min": Z_MIN, "occupancy.z_max": Z_MAX,
        "queue_size": 64, "map_dir": str(tmp / "maps"), "render_width": 64, "render_height": 48,
        "mesh_rate_hz": 1.0, "occupancy_rate_hz": 1.0, "voxels_rate_hz": 0.5, "esdf_rate_hz": 0.5,
        "render_rate_hz": 0.3, "status_rate_hz": 5.0, "warn_throttle_s": 0.0, "product_duty_max": 0.5,
        "products_min_steps": 10, "max_query_points": 50_000,
    }
    proc = NodeProcess(params, env, tmp / "node.log")
    client = None
    try:
        client = Client()
        client.wait_subscribed(timeout=60)
        client.wait_for(lambda: status_of(client), 30, "the first ~/status", proc)
        client.publish_frames_acked(scene["seq"].frames[:N_FRAMES], depth_16uc1=lambda i: i % 2 == 1)  # both encodings

        def trained():
            st = status_of(client)
            return st if st and st.frames_added >= N_FRAMES and st.steps >= MIN_STEPS else None

        client.wait_for(trained, 150, f"{N_FRAMES} frames added and {MIN_STEPS} steps", proc)
        yield {"client": client, "proc": proc, "tmp": tmp, "t_trained_ns": time.time_ns()}
    finally:
        if client is not None:
            client.close()
        proc.stop()


def _near_surface_points(scene, every=6, stride=16):
    """Points on and 5 cm in front of observed surfaces, with their true signed distance."""
    from neural_mapping.camera import backproject_depth

    pts = []
    for f in scene["seq"].frames[:N_FRAMES:every]:
        P = backproject_depth(f.depth_m, f.K, f.T_WC, stride=stride)
        d = P - f.T_WC[:3, 3]
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        pts += [P, P - 0.05 * d]
    pts = np.concatenate(pts)
    gt = scene["raycast"].compute_signed_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()
    return pts, gt


def _fresh(live, topic, what, timeout=90):
    """The latest message on ``topic`` stamped after the map was trained (products computed since)."""
    c = live["client"]

    def get():
        m = c.get(topic)
        if m is None:
            return None
        t = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        return m if t >= live["t_trained_ns"] else None

    return c.wait_for(get, timeout, what, live["proc"])


def _points_msgs(pts):
    from geometry_msgs.msg import Point

    return [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts]


def _query(client, pts, want_gradient=False):
    from neural_mapping_interfaces.srv import QueryField

    req = QueryField.Request(points=_points_msgs(pts), want_gradient=want_gradient)
    return client.call(QueryField, "query_field", req)


def _render_request(T_WC, K, H, W):
    from neural_mapping.ros import convert_out as co
    from neural_mapping_interfaces.srv import RenderView

    return RenderView.Request(pose=co.T_to_pose(T_WC), camera_info=co.camera_info_msg(K, H, W, "virtual"))


def _cols_hit(parts, x0, x1, y0, y1):
    """Per cell: does the column [x0,x1]x[y0,y1]x[Z_MIN,Z_MAX] intersect a part of the scene?"""
    hit = np.zeros(np.shape(x0), bool)
    for lo, hi in parts.values():
        if lo[2] < Z_MAX and hi[2] > Z_MIN:
            hit |= (lo[0] < x1) & (hi[0] > x0) & (lo[1] < y1) & (hi[1] > y0)
    return hit


def _cols_inside(parts, x0, x1, y0, y1):
    """Per cell: is the column's footprint entirely inside one part (no surface crosses it)?"""
    inside = np.zeros(np.shape(x0), bool)
    for lo, hi in parts.values():
        if lo[2] <= Z_MIN and hi[2] >= Z_MAX:
            inside |= (lo[0] <= x0) & (hi[0] >= x1) & (lo[1] <= y0) & (hi[1] >= y1)
    return inside


# ----------------------------------------------------------------------------- products


def test_mesh_marker_lies_on_ground_truth_surfaces(live, scene):
    from neural_mapping.ros.convert_out import marker_triangles
    from visualization_msgs.msg import Marker

    c = live["client"]
    m = _fresh(live, "mesh", "a mesh marker extracted after training")
    assert m.type == Marker.TRIANGLE_LIST and m.header.frame_id == "map"
    assert len(m.colors) == len(m.points)
    tri = marker_triangles(m)
    assert len(tri) > 200
    centroids = tri.mean(axis=1).astype(np.float32)
    dist = scene["raycast"].compute_distance(o3d.core.Tensor(centroids)).numpy()
    assert np.median(dist) < 0.05, np.percentile(dist, [50, 80, 95])
    assert np.mean(dist < 0.15) > 0.8, np.percentile(dist, [50, 80, 95])


def test_occupancy_grid_has_the_known_free_and_occupied_cells(live, scene):
    from neural_mapping.ros.convert_out import occupancy_cell_value

    c = live["client"]
    g = _fresh(live, "occupancy", "an occupancy grid computed after training")
    assert g.header.frame_id == "map" and g.info.resolution == pytest.approx(RES)
    data = np.array(g.data, np.int8).reshape(g.info.height, g.info.width)
    parts, ox, oy = scene["parts"], g.info.origin.position.x, g.info.origin.position.y
    H, W = data.shape
    ii, jj = np.mgrid[0:H, 0:W]
    x0, y0 = ox + jj * RES, oy + ii * RES  # lower-left corners of the cells
    # ground truth per cell: clearly free (20 cm from every part in the band), or holding a surface
    clear = ~_cols_hit(parts, x0 - 0.2, x0 + RES + 0.2, y0 - 0.2, y0 + RES + 0.2)
    surface = _cols_hit(parts, x0, x0 + RES, y0, y0 + RES) & ~_cols_inside(parts, x0, x0 + RES, y0, y0 + RES)
    known = data >= 0
    assert (clear & known).sum() >= 20 and (surface & known).sum() >= 20, ((clear & known).sum(), (surface & known).sum())
    free_rate = np.mean(data[clear & known] == 0)
    occ_rate = np.mean(data[surface & known] == 100)
    pic = "\n".join("".join({0: ".", 100: "#", -1: " "}[int(v)] for v in row) for row in data[::-1])
    assert free_rate > 0.8, f"{free_rate}\n{pic}\n{status_of(c)}"
    assert occ_rate > 0.8, occ_rate
    # a wall cell: the wall x = 2.5 m seen at every height of the band, straight ahead of most poses
    assert occupancy_cell_value(g, 2.45, 0.0) in (100, None) or occupancy_cell_value(g, 2.55, 0.0) == 100


def test_voxels_and_esdf_clouds_arrive(live, scene):
    from neural_mapping.ros.convert_out import cloud_to_array

    c = live["client"]
    vox = _fresh(live, "occupied_voxels", "occupied voxels computed after training")
    es = _fresh(live, "esdf_slice", "an esdf slice computed after training")
    V = cloud_to_array(vox)
    assert V.shape[1] == 3 and len(V) > 50
    d = scene["raycast"].compute_distance(o3d.core.Tensor(V.astype(np.float32))).numpy()
    assert np.median(d) < RES
    E = cloud_to_array(es)
    assert [f.name for f in es.fields] == ["x", "y", "z", "distance"] and len(E) > 50
    gt = scene["raycast"].compute_signed_distance(o3d.core.Tensor(E[:, :3].astype(np.float32))).numpy()
    near = np.abs(gt) < 0.1  # the field is trained on the truncation band
    assert near.sum() > 10 and np.median(np.abs(E[near, 3] - gt[near])) < 0.05


def test_rendered_images_arrive(live, scene):
    from neural_mapping.ros import convert

    c = live["client"]
    col = _fresh(live, "rendered/color", "a rendered colour image")
    dep = _fresh(live, "rendered/depth", "a rendered depth image")
    info = _fresh(live, "rendered/camera_info", "rendered camera_info")
    assert (col.encoding, col.height, col.width) == ("rgb8", 48, 64)
    assert (dep.encoding, dep.height, dep.width) == ("32FC1", 48, 64)
    d = convert.image_to_depth_m(dep)
    K = convert.camera_info_to_K(info)
    assert K[0, 0] == pytest.approx(scene["seq"].K[0, 0] * 64 / 160)
    # rendered from the latest camera pose: the last frame mapped
    _, d_gt = scene["renderer"].render(scene["seq"].frames[N_FRAMES - 1].T_WC, K, 48, 64)
    both = (d > 0) & (d_gt > 0)
    # where the map renders a surface it is the true one (how much it covers is the core's business)
    assert both.sum() >= 20, (both.sum(), (d_gt > 0).sum())
    assert np.median(np.abs(d[both] - d_gt[both])) < 0.1


def test_render_pose_moves_the_virtual_camera(live, scene):
    from geometry_msgs.msg import PoseStamped

    from neural_mapping.ros import convert
    from neural_mapping.ros import convert_out as co

    c = live["client"]
    f = scene["seq"].frames[6]
    t_sent = time.time_ns()
    c.pub_render_pose.publish(PoseStamped(header=co.make_header("map", 0), pose=co.T_to_pose(f.T_WC)))

    def depth_after(t_ns):
        m = c.get("rendered/depth")
        return m if m is not None and m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec > t_ns else None

    # the first view stamped after sending may have been started before the pose arrived: take the next
    first = c.wait_for(lambda: depth_after(t_sent), 90, "a view rendered after ~/render_pose was sent", live["proc"])
    t_first = first.header.stamp.sec * 1_000_000_000 + first.header.stamp.nanosec
    dep = c.wait_for(lambda: depth_after(t_first), 90, "a view rendered from ~/render_pose", live["proc"])
    d = convert.image_to_depth_m(dep)
    K = convert.camera_info_to_K(c.get("rendered/camera_info"))
    _, d_here = scene["renderer"].render(f.T_WC, K, 48, 64)
    _, d_last = scene["renderer"].render(scene["seq"].frames[N_FRAMES - 1].T_WC, K, 48, 64)
    hit = d > 0
    assert hit.sum() >= 20
    err_here = np.median(np.abs(d[hit] - d_here[hit]))
    assert err_here < 0.1 and err_here < np.median(np.abs(d[hit] - d_last[hit]))


# ----------------------------------------------------------------------------- services


def test_query_field_matches_the_true_distance(live, scene):
    c = live["client"]
    pts, gt = _near_surface_points(scene)
    r = _query(c, pts, want_gradient=True)
    assert r.success, r.message
    assert "taken as arrays" in r.message  # the node read the points without a Point object each (ros/fastpath.py)
    sdf = np.array(r.sdf)
    occ = np.array(r.occupancy)
    assert sdf.shape == (len(pts),) and occ.shape == (len(pts),) and len(r.gradients) == len(pts)
    err = np.abs(sdf - gt)
    assert np.median(err) < 0.04 and np.percentile(err, 80) < 0.08, np.percentile(err, [50, 80, 95])
    # floor points 5 cm up: the gradient points up
    floor = (np.abs(pts[:, 2] - 0.05) < 0.01) & (np.abs(gt - 0.05) < 0.01)
    if floor.sum() >= 5:
        g = np.array([[v.x, v.y, v.z] for v in r.gradients])[floor]
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)
        assert np.median(g[:, 2]) > 0.7
    # far away, never observed: occupancy 0.5
    far = _query(c, np.array([[40.0, 40.0, 40.0]]))
    assert far.success and np.array(far.occupancy)[0] == pytest.approx(0.5)
    bad = _query(c, np.array([[np.nan, 0.0, 0.0]]))
    assert not bad.success and "NaN" in bad.message


def test_query_field_from_a_client_using_arrays(live, scene):
    from neural_mapping.ros.fastpath import QueryResponseArrays, use_arrays
    from neural_mapping_interfaces.srv import QueryField

    c = live["client"]
    pts, gt = _near_surface_points(scene)
    cli = c.wait_for_service(QueryField, "query_field")
    Request = use_arrays(cli)
    assert Request is not None, "the client-side array conversion failed its check"
    r = c.call_client(cli, Request(pts, True))
    assert isinstance(r, QueryResponseArrays) and r.success, r.message
    assert r.sdf.shape == (len(pts),) and r.occupancy.shape == (len(pts),) and r.gradients.shape == (len(pts), 3)
    err = np.abs(r.sdf - gt)
    assert np.median(err) < 0.04 and np.percentile(err, 80) < 0.08, np.percentile(err, [50, 80, 95])
    plain = _query(c, pts, want_gradient=True)  # the message client, a moment later (training goes on)
    assert np.median(np.abs(r.sdf - np.array(plain.sdf))) < 0.01
    g = np.array([[v.x, v.y, v.z] for v in plain.gradients])
    cos = (r.gradients * g).sum(1) / np.maximum(np.linalg.norm(r.gradients, axis=1) * np.linalg.norm(g, axis=1), 1e-9)
    assert np.median(cos) > 0.95
    bad = c.call_client(cli, Request(np.array([[np.nan, 0.0, 0.0]]), False))
    assert not bad.success and "NaN" in bad.message and bad.gradients.shape == (0, 3)
    big = c.call_client(cli, Request(np.zeros((50_001, 3)), False))  # over max_query_points (50 000 here)
    assert not big.success and "max_query_points" in big.message and big.sdf.shape == (0,)
    again = c.call_client(cli, Request(pts[:5], False))  # refused requests lose nothing: it still answers
    assert again.success and again.sdf.shape == (5,)


def test_render_view_depth_matches_ground_truth(live, scene):
    from neural_mapping.ros import convert
    from neural_mapping_interfaces.srv import RenderView

    c = live["client"]
    f = scene["seq"].frames[N_FRAMES // 2]
    H, W = 48, 64
    K = f.K.copy()
    K[0] *= W / 160
    K[1] *= H / 120
    r = c.call(RenderView, "render_view", _render_request(f.T_WC, K, H, W))
    assert r.success, r.message
    d = convert.image_to_depth_m(r.depth)
    rgb = convert.image_to_rgb(r.color)
    assert d.shape == (H, W) and rgb.shape == (H, W, 3)
    rgb_gt, d_gt = scene["renderer"].render(f.T_WC, K, H, W)
    both = (d > 0) & (d_gt > 0)
    # where the map renders a surface it is the true one (how much it covers is the core's business)
    assert both.sum() >= 20, (both.sum(), (d_gt > 0).sum())
    assert np.median(np.abs(d[both] - d_gt[both])) < 0.08
    bad_K = K.copy()
    bad_K[0, 0] = 0.0
    r = c.call(RenderView, "render_view", _render_request(f.T_WC, bad_K, H, W))
    assert not r.success and "focal" in r.message


def test_save_reset_load_gives_the_same_answers(live, scene):
    from nav_msgs.srv import GetMap
    from neural_mapping_interfaces.srv import LoadMap, SaveMap
    from std_srvs.srv import SetBool, Trigger

    c = live["client"]
    pts, _ = _near_surface_points(scene, every=12, stride=32)
    assert c.call(SetBool, "pause", SetBool.Request(data=True)).success
    before = _query(c, pts)
    assert before.success
    again = _query(c, pts)
    np.testing.assert_array_equal(np.array(again.sdf), np.array(before.sdf))  # paused: the map holds still
    saved = c.call(SaveMap, "save_map", SaveMap.Request(name="room.map"))
    assert saved.success, saved.message
    assert saved.path == str((live["tmp"] / "maps" / "room.map").resolve()) and os.path.isfile(saved.path)
    assert c.call(Trigger, "reset", Trigger.Request()).success
    empty = _query(c, pts)
    assert not empty.success and "empty" in empty.message
    loaded = c.call(LoadMap, "load_map", LoadMap.Request(name="room.map"))
    assert loaded.success, loaded.message
    after = _query(c, pts)
    assert after.success
    # the map file keeps the hash tables as float16 (format 2): the SDF moves by micrometres
    np.testing.assert_allclose(np.array(after.sdf), np.array(before.sdf), atol=1e-4)
    np.testing.assert_allclose(np.array(after.occupancy), np.array(before.occupancy), atol=1e-3)
    # get_map answers the product of the loaded map: the same grid as computed here from the saved file
    gm = c.call(GetMap, "get_map", GetMap.Request())
    assert gm.map.info.width > 0 and gm.map.header.frame_id == "map"
    from neural_mapping.mapfile import load_map
    from neural_mapping.products import occupancy_slice_2d

    offline = load_map(saved.path, device="cpu")
    sl = occupancy_slice_2d(offline, Z_MIN, Z_MAX, RES)
    assert (gm.map.info.width, gm.map.info.height) == (sl.width, sl.height)
    assert gm.map.info.origin.position.x == pytest.approx(sl.origin_xy[0])
    np.testing.assert_array_equal(np.array(gm.map.data, np.int8), sl.data.reshape(-1))
    # render_view answers the loaded map's rendering, as computed here from the saved file
    from neural_mapping.ros import convert
    from neural_mapping_interfaces.srv import RenderView

    f = scene["seq"].frames[3]
    K = f.K.copy()
    K[:2] *= 0.25
    rv = c.call(RenderView, "render_view", _render_request(f.T_WC, K, 30, 40))
    assert rv.success, rv.message
    ref = offline.render(f.T_WC, K, 30, 40)
    np.testing.assert_allclose(convert.image_to_depth_m(rv.depth), ref.depth, atol=1e-4)
    assert np.abs(convert.image_to_rgb(rv.color).astype(int) - np.round(ref.color * 255)).max() <= 1


def test_bad_map_names_and_missing_files_are_refused(live):
    from neural_mapping_interfaces.srv import LoadMap, SaveMap

    c = live["client"]
    for name in ["../x", "a/b", "/tmp/abs", "..", ""]:
        r = c.call(SaveMap, "save_map", SaveMap.Request(name=name))
        assert not r.success and r.path == "", name
    assert not (live["tmp"] / "x").exists()
    r = c.call(LoadMap, "load_map", LoadMap.Request(name="nothing_here.map"))
    assert not r.success and "no such map" in r.message
    r = c.call(LoadMap, "load_map", LoadMap.Request(name="../room.map"))
    assert not r.success and "refused" in r.message


def test_runtime_parameters_are_validated(live):
    from rcl_interfaces.srv import GetParameters, SetParameters
    from rclpy.parameter import Parameter

    c = live["client"]

    def set_(name, value):
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return c.call(SetParameters, "set_parameters", req).results[0]

    assert not set_("occupancy.z_min", 2.0).successful  # above z_max
    assert not set_("mesh_rate_hz", 500.0).successful  # outside [0, 50]
    assert not set_("mesh_budget_s", -1.0).successful  # a negative time budget
    assert set_("mesh_budget_s", 0.5).successful  # runtime (the default again: later tests unaffected)
    assert not set_("train.lr", 0.5).successful  # read-only: not a runtime parameter
    assert set_("occupancy.esdf_height", 0.4).successful
    assert set_("voxels_rate_hz", 0.0).successful  # switches the product off
    vals = c.call(GetParameters, "get_parameters",
                  GetParameters.Request(names=["occupancy.z_min", "occupancy.esdf_height", "train.lr"])).values
    assert vals[0].double_value == pytest.approx(Z_MIN) and vals[1].double_value == pytest.approx(0.4)
    from neural_mapping.config import preset

    assert vals[2].double_value == pytest.approx(preset("cpu").train.lr)  # unchanged


def test_malformed_messages_are_dropped_counted_and_mapping_goes_on(live, scene):
    from std_srvs.srv import SetBool

    c, proc = live["client"], live["proc"]
    assert c.call(SetBool, "pause", SetBool.Request(data=False)).success
    st0 = c.wait_for(lambda: status_of(c), 10, "status", proc)
    late = scene["seq"].frames[N_FRAMES:]
    color, depth, info, pose = frame_messages(late[0])
    color.encoding = "yuv422"  # wrong encoding
    c.pub_color.publish(color)
    _, depth2, _, _ = frame_messages(late[0])
    depth2.data = bytes(depth2.data)[:-7]  # size mismatch
    c.pub_depth.publish(depth2)
    pose.pose.orientation.w = float("nan")  # NaN pose
    c.pub_pose.publish(pose)
    st = c.wait_for(lambda: (lambda s: s if s and s.dropped_malformed >= st0.dropped_malformed + 3 else None)(status_of(c)),
                    30, "3 malformed messages counted", proc)
    assert proc.proc.poll() is None
    c.publish_frames_acked(late)
    c.wait_for(lambda: (lambda s: s if s and s.frames_added >= st.frames_added + N_LATE - 1 and s.steps > st.steps else None)(
        status_of(c)), 60, "the late frames mapped", proc)
    assert "malformed" in proc.log()
