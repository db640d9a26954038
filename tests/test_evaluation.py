"""Evaluation metrics on hand-made meshes with known answers."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from neural_mapping.camera import intrinsics
from neural_mapping.evaluation import (depth_l1, distance_to_mesh, mesh_metrics, psnr, sample_surface, sdf_error,
                                       signed_distance_to_mesh, tsdf_baseline, visible_mask)
from neural_mapping.frame import Frame


def plane(x0=0.0, x1=1.0, y0=0.0, y1=1.0, z=0.0, n=10) -> o3d.geometry.TriangleMesh:
    """A horizontal rectangle at height z made of 2 n^2 triangles."""
    xs, ys = np.linspace(x0, x1, n + 1), np.linspace(y0, y1, n + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    V = np.stack([X.ravel(), Y.ravel(), np.full(X.size, z)], 1)
    idx = np.arange(X.size).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    F = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(V), o3d.utility.Vector3iVector(F))
    return m


def test_sampling_is_uniform_by_area():
    pts = sample_surface(plane(0, 2, 0, 1), 40_000, seed=3)
    assert pts.shape == (40_000, 3)
    assert np.all((pts[:, 0] >= 0) & (pts[:, 0] <= 2) & (pts[:, 1] >= 0) & (pts[:, 1] <= 1))
    assert (pts[:, 0] < 1).mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(pts[:, 2], 0.0)


def test_two_parallel_planes_3cm_apart():
    m = mesh_metrics(plane(z=0.03), plane(z=0.0), n_points=20_000)
    assert m.accuracy_cm == pytest.approx(3.0, abs=1e-4)
    assert m.completion_cm == pytest.approx(3.0, abs=1e-4)
    assert m.chamfer_l1_cm == pytest.approx(3.0, abs=1e-4)
    assert m.precision_2cm == 0 and m.recall_2cm == 0 and m.fscore_2cm == 0
    assert m.precision_5cm == 1 and m.recall_5cm == 1 and m.fscore_5cm == 1
    assert m.completion_ratio_5cm == 1


def test_half_plane_prediction_has_known_completion():
    # prediction covers x in [0, 0.5] of the unit GT square, at the same height
    m = mesh_metrics(plane(x1=0.5), plane(), n_points=100_000)
    assert m.accuracy_cm == pytest.approx(0.0, abs=1e-4)
    assert m.precision_2cm == 1 and m.precision_5cm == 1
    # GT points with x > 0.5 are (x - 0.5) away: half the points, mean 0.25 m -> 0.125 m overall
    assert m.completion_cm == pytest.approx(12.5, abs=0.15)
    assert m.chamfer_l1_cm == pytest.approx(12.5 / 2, abs=0.1)
    # within 5 cm: x < 0.55 -> 55 %; within 2 cm: 52 %
    assert m.completion_ratio_5cm == pytest.approx(0.55, abs=0.005)
    assert m.recall_5cm == pytest.approx(0.55, abs=0.005)
    assert m.recall_2cm == pytest.approx(0.52, abs=0.005)
    assert m.fscore_5cm == pytest.approx(2 * 0.55 / 1.55, abs=0.005)
    assert "Chamfer-L1" in m.table() and set(m.to_dict()) >= {"accuracy_cm", "fscore_5cm"}


def test_gt_restricted_to_what_frames_saw():
    # GT: a floor square (z=0) and a second square hidden under it (z=-0.5); a camera above
    # looking down sees only the top one; the prediction is the top square alone
    gt = plane(z=0.0) + plane(z=-0.5)
    pred = plane(z=0.0)
    T_WC = np.eye(4)
    T_WC[:3, :3] = np.diag([1.0, -1.0, -1.0])  # camera z axis points down (-z world)
    T_WC[:3, 3] = [0.5, 0.5, 1.0]
    K = intrinsics(40.0, 40.0, 31.5, 31.5)
    depth = np.ones((64, 64), np.float32)  # the floor is 1 m below
    f = Frame(np.zeros((64, 64, 3), np.uint8), depth, K, T_WC)
    everything = mesh_metrics(pred, gt, n_points=20_000)
    seen = mesh_metrics(pred, gt, n_points=20_000, frames=[f])
    assert everything.completion_cm == pytest.approx(25.0, abs=0.5)  # half the GT is 50 cm away
    assert seen.gt_visible_fraction == pytest.approx(0.5, abs=0.02)
    assert seen.completion_cm == pytest.approx(0.0, abs=1e-3)
    assert seen.fscore_2cm == pytest.approx(1.0)
    # invalid depth means the frame did not see it
    f0 = Frame(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.float32), K, T_WC)
    pts = sample_surface(gt, 1000)
    assert not visible_mask(pts, gt, [f0]).any()


def test_distances_and_signed_distances_to_a_box():
    box = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0)
    pts = np.array([[0.5, 0.5, 1.5], [0.5, 0.5, 0.6], [2.0, 0.5, 0.5]])
    np.testing.assert_allclose(distance_to_mesh(pts, box), [0.5, 0.4, 1.0], atol=1e-6)
    np.testing.assert_allclose(signed_distance_to_mesh(pts, box), [0.5, -0.4, 1.0], atol=1e-6)
    e = sdf_error(np.array([0.5, -0.3, 1.2]), signed_distance_to_mesh(pts, box))
    assert e.mean_abs_m == pytest.approx(0.1, abs=1e-6) and e.max_abs_m == pytest.approx(0.2, abs=1e-6)
    assert sdf_error(np.array([0.5, -0.3, 1.2]), np.array([0.5, -0.4, 1.0]), band_m=0.6).n == 2


def test_depth_l1_and_psnr_hand_computed():
    gt = np.array([[1.0, 2.0], [0.0, 4.0]], np.float32)
    pred = np.array([[1.1, 1.8], [3.0, 0.0]], np.float32)
    assert depth_l1(pred, gt) == pytest.approx((0.1 + 0.2) / 2, abs=1e-6)  # only both-valid pixels
    a = np.zeros((4, 4, 3), np.float32)
    b = np.full((4, 4, 3), 0.1, np.float32)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert psnr(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)) == pytest.approx(0.0)
    assert psnr(a, a) == float("inf")
    with pytest.raises(ValueError):
        depth_l1(np.zeros((2, 2)), np.zeros((3, 2)))


def test_tsdf_baseline_reconstructs_a_seen_plane():
    # a camera 1 m in front of a wall (fronto-parallel): TSDF mesh lies on z = 1
    K = intrinsics(60.0, 60.0, 39.5, 29.5)
    depth = np.ones((60, 80), np.float32)
    f = Frame(np.full((60, 80, 3), 128, np.uint8), depth, K, np.eye(4))
    r = tsdf_baseline([f, f], voxel_m=0.02)
    V = np.asarray(r.mesh.vertices)
    assert r.frames == 2 and len(V) > 100 and r.memory_mb > 0
    np.testing.assert_allclose(V[:, 2], 1.0, atol=0.01)


def test_eval_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    import json

    from neural_mapping.cli import main

    o3d.io.write_triangle_mesh(str(tmp_path / "pred.ply"), plane(z=0.03))
    o3d.io.write_triangle_mesh(str(tmp_path / "gt.ply"), plane(z=0.0))
    assert main(["eval", str(tmp_path / "pred.ply"), "--gt", str(tmp_path / "gt.ply"), "--points", "20000",
                 "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "Chamfer-L1" in out and "3.00 cm" in out
    d = json.loads((tmp_path / "e.json").read_text())
    assert d["chamfer_l1_cm"] == pytest.approx(3.0, abs=1e-3) and d["fscore_5cm"] == 1.0
    assert main(["eval", str(tmp_path / "nope.ply"), "--gt", str(tmp_path / "gt.ply")]) == 2
    assert "mesh file not found" in capsys.readouterr().err
