"""The synthetic room: geometry, rendering (z-depth, colours) and determinism."""

import numpy as np
import open3d as o3d
import pytest

from neural_mapping.camera import backproject_depth, invert_T
from neural_mapping.io.synthetic import ROOM_HI, ROOM_LO, look_at_T_WC, synthetic_sequence


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(n_frames=12, width=80, height=60, seed=0)


def _scene(mesh):
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return sc


def test_backprojected_depth_lands_on_mesh(seq):
    sc = _scene(seq.mesh)
    for f in seq.frames:
        assert f.n_valid_depth == f.width * f.height  # a closed room: every ray hits
        pts_W = backproject_depth(f.depth_m, f.K, f.T_WC)
        d = sc.compute_distance(o3d.core.Tensor(pts_W.astype(np.float32))).numpy()
        assert d.max() < 1e-3


def test_depth_is_z_not_ray_length(seq):
    # a corner pixel's ray is oblique: the hit point's camera z equals the stored depth
    f = seq.frames[0]
    sc = _scene(seq.mesh)
    u, v = 0, 0
    d_C = np.array([(u - f.K[0, 2]) / f.K[0, 0], (v - f.K[1, 2]) / f.K[1, 1], 1.0])
    d_C_unit = d_C / np.linalg.norm(d_C)
    d_W = f.T_WC[:3, :3] @ d_C_unit
    ray = np.concatenate([f.T_WC[:3, 3], d_W])[None].astype(np.float32)
    length = float(sc.cast_rays(o3d.core.Tensor(ray))["t_hit"].numpy()[0])
    assert f.depth_m[v, u] == pytest.approx(length / np.linalg.norm(d_C), abs=1e-4)
    assert f.depth_m[v, u] < length - 0.05  # oblique: ray length clearly longer than z


def test_scene_layout_and_signed_distance(seq):
    v = np.asarray(seq.mesh.vertices)
    assert v[:, 2].min() == pytest.approx(-0.1)  # floor slab below z = 0
    lo, hi = seq.parts["floor"]
    assert hi[2] == 0.0
    assert np.allclose(ROOM_HI - ROOM_LO, [5.0, 4.0, 2.6])
    assert len(seq.mesh.vertex_colors) == len(v)
    sc = _scene(seq.mesh)
    q = np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 0.73], [0.0, 1.2, 1.6]], np.float32)
    sd = sc.compute_signed_distance(o3d.core.Tensor(q)).numpy()
    assert sd[0] == pytest.approx(0.74, abs=1e-4)  # 1.5 m above the 0.76 m table top
    assert sd[1] < 0  # inside the table top
    assert sd[2] == pytest.approx(0.8, abs=1e-4)  # 0.8 m from the wall at y = 2


def test_poses_are_camera_to_world_looking_at_target():
    T = look_at_T_WC([0.0, 0.0, 1.0], [2.0, 0.0, 1.0])
    # camera z (forward) is world +x; camera y (down) is world -z
    assert np.allclose(T[:3, 2], [1, 0, 0]) and np.allclose(T[:3, 1], [0, 0, -1])
    p_C = invert_T(T) @ np.array([2.0, 0.0, 1.0, 1.0])
    assert np.allclose(p_C[:3], [0, 0, 2])


def test_colours_vary_and_trajectory_is_smooth(seq):
    f = seq.frames[0]
    assert f.rgb.reshape(-1, 3).std(0).min() > 10  # textured, not flat
    assert len(np.unique(f.rgb.reshape(-1, 3), axis=0)) > 500
    steps = [np.linalg.norm(b.T_WC[:3, 3] - a.T_WC[:3, 3]) for a, b in zip(seq.frames, seq.frames[1:])]
    assert max(steps) < 0.8 and min(steps) > 0.1  # 12 frames over a ~7 m loop
    for fr in seq.frames:  # inside the room, away from the walls
        assert np.all(fr.T_WC[:3, 3] > ROOM_LO + 0.5) and np.all(fr.T_WC[:3, 3] < ROOM_HI - 0.5)
    dt = np.diff([fr.stamp_ns for fr in seq.frames])
    assert np.all(np.abs(dt - 1e9 / 30) <= 1000)


def test_deterministic_noise_and_dropout():
    a = synthetic_sequence(n_frames=2, width=40, height=30, seed=3, noise_std_m=0.01, dropout=0.1)
    b = synthetic_sequence(n_frames=2, width=40, height=30, seed=3, noise_std_m=0.01, dropout=0.1)
    clean = synthetic_sequence(n_frames=2, width=40, height=30, seed=3)
    for fa, fb, fc in zip(a.frames, b.frames, clean.frames):
        assert np.array_equal(fa.depth_m, fb.depth_m) and np.array_equal(fa.rgb, fb.rgb)
        both = (fa.depth_m > 0) & (fc.depth_m > 0)
        frac_drop = 1.0 - (fa.depth_m > 0).mean()
        assert 0.05 < frac_drop < 0.15
        err = fa.depth_m[both] - fc.depth_m[both]
        assert 0.007 < err.std() < 0.013 and abs(err.mean()) < 0.003
    other = synthetic_sequence(n_frames=2, width=40, height=30, seed=4)
    assert not np.allclose(other.frames[0].T_WC, clean.frames[0].T_WC)
