import numpy as np
import pytest
import torch

from neural_mapping import camera as C


def test_quaternion_round_trip_and_known_rotation():
    # 90 deg about z: x -> y
    q = [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]
    R = C.quat_to_R(q)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[3] >= 0 else -q
        np.testing.assert_allclose(C.R_to_quat(C.quat_to_R(q)), q, atol=1e-9)


def test_slerp_halfway_is_half_the_angle():
    q0 = [0, 0, 0, 1.0]
    q1 = [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]  # 90 deg about z
    q = C.slerp(q0, q1, 0.5)
    np.testing.assert_allclose(q, [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)], atol=1e-12)


def test_interpolate_pose_at_brackets_and_refuses_outside():
    T0 = C.make_T(np.eye(3), [0, 0, 0])
    T1 = C.make_T(C.quat_to_R([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]), [2, 0, 0])
    stamps, poses = [], []
    C.insert_stamped_pose(stamps, poses, 10.0, T1)
    C.insert_stamped_pose(stamps, poses, 0.0, T0)  # out of order: sorted on insert
    assert stamps == [0.0, 10.0]
    T = C.interpolate_pose_at(np.array(stamps), np.array(poses), 2.5)
    np.testing.assert_allclose(T[:3, 3], [0.5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(C.R_to_quat(T[:3, :3]), [0, 0, np.sin(np.pi / 16), np.cos(np.pi / 16)], atol=1e-9)
    assert C.interpolate_pose_at(np.array(stamps), np.array(poses), 10.5) is None
    assert C.interpolate_pose_at(np.array(stamps), np.array(poses), 5.0, max_gap=5.0) is None
    C.insert_stamped_pose(stamps, poses, 10.0, T0)  # same stamp replaces
    assert len(stamps) == 2 and np.array_equal(poses[1], T0)


def test_invert_and_backproject_match_the_pinhole_model():
    K = C.intrinsics(100, 100, 2, 1)
    depth = np.zeros((3, 5), np.float32)
    depth[1, 4] = 2.0  # u=4, v=1 -> x = (4-2)/100*2 = 0.04, y = 0
    T = C.make_T(C.quat_to_R([0.2, -0.1, 0.3, 0.9]), [1, 2, 3])
    np.testing.assert_allclose(C.invert_T(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(C.backproject_depth(depth, K), [[0.04, 0.0, 2.0]], atol=1e-7)
    pts_W = C.backproject_depth(depth, K, T)
    np.testing.assert_allclose(pts_W, (T[:3, :3] @ [0.04, 0, 2.0] + T[:3, 3])[None], atol=1e-7)


def test_image_rays_reach_the_pixel_at_its_depth():
    K = C.intrinsics(50, 60, 3.5, 2.5)
    T = C.make_T(C.quat_to_R([0.1, 0.2, -0.3, 0.9]), [0.5, -1, 2])
    o, d = C.image_rays_W(T, K, 6, 8, dtype=torch.float64)
    assert o.shape == d.shape == (48, 3)
    # pixel (u=7, v=5) at depth 3 m
    p_W = (o[5 * 8 + 7] + 3.0 * d[5 * 8 + 7]).numpy()
    p_C = C.invert_T(T) @ np.append(p_W, 1.0)
    np.testing.assert_allclose(p_C[:3], [(7 - 3.5) / 50 * 3, (5 - 2.5) / 60 * 3, 3.0], atol=1e-9)


def test_scale_intrinsics_keeps_pixel_centres():
    K = C.intrinsics(100, 80, 319.5, 239.5)
    K2 = C.scale_intrinsics(K, 0.5, 0.5)
    np.testing.assert_allclose(K2, C.intrinsics(50, 40, 159.5, 119.5))


def test_stride_intrinsics_keep_each_kept_pixels_ray():
    K = np.array([[40.0, 0.5, 31.5], [0, 41.0, 11.5], [0, 0, 1]])
    K3 = C.stride_intrinsics(K, 3)
    np.testing.assert_allclose(K3, [[40 / 3, 0.5 / 3, 10.5], [0, 41 / 3, 11.5 / 3], [0, 0, 1]])
    # pixel (u, v) = (6, 9) of the full image is pixel (2, 3) of the strided one: same ray
    ray = np.linalg.solve(K, [6.0, 9.0, 1.0])
    np.testing.assert_allclose(np.linalg.solve(K3, [2.0, 3.0, 1.0]), ray)
    with pytest.raises(ValueError):
        C.scale_intrinsics(K, 0.5, 0.5, keep="middle")


def test_scale_intrinsics_corner_maps_image_edges_to_image_edges():
    K = C.intrinsics(100, 80, 10.0, 20.0)
    K2 = C.scale_intrinsics(K, 2.0, 0.5)
    # the left/top image edge (-0.5) stays; the right edge of a 64-wide image (63.5) goes to 127.5
    for u, v in [(-0.5, -0.5), (63.5, 47.5), (10.0, 20.0)]:
        x = np.linalg.solve(K, [u, v, 1.0])
        np.testing.assert_allclose(K2 @ x, [(u + 0.5) * 2.0 - 0.5, (v + 0.5) * 0.5 - 0.5, 1.0])
