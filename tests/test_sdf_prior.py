"""The fused TSDF prior (neural_mapping/sdf_prior.py): analytic scenes, invalid depth, state, the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neural_mapping.camera import intrinsics
from neural_mapping.config import apply_overrides, preset
from neural_mapping.sdf_prior import SdfPrior

W, H = 96, 72
K = intrinsics(80.0, 80.0, W / 2, H / 2)


def plane_depth(z: float = 2.0) -> np.ndarray:
    """A fronto-parallel plane z metres in front of a camera at the origin looking along +z."""
    return np.full((H, W), z, np.float32)


def sphere_depth(T_WC: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    d_C = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    d_W = d_C @ T_WC[:3, :3].T
    o = T_WC[:3, 3]
    # |o + t d - c|^2 = r^2 with t the z-depth (d has z = 1 in the camera)
    a = (d_W ** 2).sum(-1)
    b = 2 * (d_W * (o - c)).sum(-1)
    cc = ((o - c) ** 2).sum() - r * r
    disc = b * b - 4 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, t, 0).astype(np.float32)


def look_at(eye, target) -> np.ndarray:
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = eye
    return T


def sdf_of(prior: SdfPrior, pts) -> np.ndarray:
    """The untrained field with this prior: h0 + q."""
    with torch.no_grad():
        return prior(torch.as_tensor(pts, dtype=torch.float32)).numpy() + prior.offset_m


def test_a_plane_is_recovered_within_a_voxel_and_nothing_outside_the_band_is_written():
    p = SdfPrior(voxel_m=0.04, trunc_voxels=3, offset_m=0.1, stride=1)
    assert p.integrate(plane_depth(2.0), K, np.eye(4)) > 0
    # on the optical axis, through the band: the field is the distance to the plane (z = 2)
    z = np.linspace(1.9, 2.1, 21)
    pts = np.stack([np.zeros_like(z), np.zeros_like(z), z], 1)
    np.testing.assert_allclose(sdf_of(p, pts), 2.0 - z, atol=0.02)
    # far in front of the band nothing was fused: the network's +h0 alone
    assert np.allclose(sdf_of(p, [[0, 0, 1.0], [0.2, -0.1, 1.5]]), 0.1)
    # the voxel values are exact at the nodes (a fronto-parallel plane: projective = Euclidean)
    np.testing.assert_allclose(sdf_of(p, [[0, 0, 1.96], [0, 0, 2.04]]), [0.04, -0.04], atol=1e-5)


def test_a_sphere_from_several_views_is_within_a_voxel():
    c, r = np.array([0.0, 0.0, 1.0]), 0.5
    p = SdfPrior(voxel_m=0.04, trunc_voxels=3, offset_m=0.1, stride=1)
    for a in np.linspace(0, 2 * np.pi, 8, endpoint=False):
        eye = c + 2.0 * np.array([np.cos(a), np.sin(a), 0.3])
        T = look_at(eye, c)
        p.integrate(sphere_depth(T, c, r), K, T)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs = dirs[np.abs(dirs[:, 2]) < 0.5]  # the part the views saw
    surf = c + r * dirs
    assert np.abs(sdf_of(p, surf)).max() < 0.04
    out = c + (r + 0.03) * dirs  # 3 cm outside: positive, over-stated by at most a voxel (a projective
    v = sdf_of(p, out)           # TSDF measures along the ray, longer than the normal on a curved surface)
    assert np.all(v > 0) and np.quantile(v - 0.03, 0.9) < 0.04 and np.quantile(v - 0.03, 0.1) > -0.01


def test_invalid_depth_changes_nothing_outside_the_valid_rays():
    d = plane_depth(2.0)
    d[:, W // 2:] = np.nan
    d[: H // 4, : W // 2] = 0.0
    d[H - 4:, : W // 2] = 100.0  # beyond max_depth_m
    p = SdfPrior(voxel_m=0.04, trunc_voxels=3, offset_m=0.1, stride=1)
    p.integrate(d, K, np.eye(4))
    # points on the plane seen through the right half (NaN) and the top rows (0) were not fused
    right = np.array([[0.5, 0.0, 2.0], [0.8, 0.2, 2.0]])
    top = np.array([[-0.5, -0.7, 2.0]])
    assert np.allclose(sdf_of(p, np.vstack([right, top])), 0.1)
    assert np.all(np.isfinite(p.tsdf.numpy())) and np.all(np.isfinite(p.weight.numpy()))
    # the valid quarter was
    assert abs(float(sdf_of(p, [[-0.5, 0.1, 2.0]])[0])) < 0.02
    # a frame with no valid depth at all changes nothing
    before = p.tsdf.clone(), p.weight.clone()
    assert p.integrate(np.full((H, W), np.nan, np.float32), K, np.eye(4)) == 0
    assert torch.equal(p.tsdf, before[0]) and torch.equal(p.weight, before[1])


def test_analytic_gradient_matches_autograd_and_state_round_trips():
    c, r = np.array([0.0, 0.0, 1.0]), 0.5
    p = SdfPrior(voxel_m=0.04, trunc_voxels=3, offset_m=0.1, stride=1)
    for a in (0.0, 2.0, 4.0):
        T = look_at(c + 2.0 * np.array([np.cos(a), np.sin(a), 0.2]), c)
        p.integrate(sphere_depth(T, c, r), K, T)
    x = torch.as_tensor(c + np.random.default_rng(1).uniform(-0.6, 0.6, (300, 3)), dtype=torch.float32)
    v, g = p.value_and_gradient(x)
    xg = x.clone().requires_grad_(True)
    q = p(xg)
    (ga,) = torch.autograd.grad(q.sum(), xg)
    torch.testing.assert_close(v, q.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g, ga, atol=1e-4, rtol=1e-4)
    assert g.abs().sum() > 0
    p2 = SdfPrior(voxel_m=0.04, trunc_voxels=3, offset_m=0.1)
    p2.load_state_dict(p.state_dict())  # block arrays of another size: replaced, not copied
    assert p2.n_blocks == p.n_blocks > 0
    torch.testing.assert_close(p2(x), p(x))
    bad = dict(p.state_dict())
    bad["weight"] = bad["weight"][:1]
    with pytest.raises(RuntimeError, match="do not match"):
        p2.load_state_dict(bad)


def test_a_mapper_with_the_prior_fuses_every_frame_saves_it_and_meshes_without_a_second_sheet(tmp_path):
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapfile import load_map, save_map
    from neural_mapping.mapper import Mapper
    from neural_mapping.products import MeshExtractor

    seq = synthetic_sequence(n_frames=12, width=80, height=60)
    cfg = apply_overrides(preset("cpu"), {"prior.enabled": True, "encoding.hash_log2_table": 12,
                                          "encoding.hash_levels": 8, "train.rays_per_step": 256})
    m = Mapper(cfg)
    for f in seq.frames:
        assert m.add_frame(f)
    assert m.field.prior.frames == 12  # keyframes and the others alike
    m.step(3)
    pts = np.random.default_rng(2).uniform(m.bounds()[0], m.bounds()[1], size=(2000, 3)).astype(np.float32)
    a = m.query(pts, want_gradient=True)
    m2 = load_map(save_map(m, tmp_path / "map.pt"))
    assert m2.field.prior.n_blocks == m.field.prior.n_blocks
    b = m2.query(pts, want_gradient=True)
    assert np.abs(a.sdf - b.sdf).max() < 1e-3  # float16 tables and prior in the file
    # the mesh of the (barely trained) field follows the ground truth: no sheet behind the band
    import open3d as o3d

    mesh = MeshExtractor(m).extract(full=True)
    v = np.asarray(mesh.vertices, np.float32)[np.unique(np.asarray(mesh.triangles))]
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(seq.mesh))
    d = sc.compute_distance(o3d.core.Tensor(v)).numpy()
    assert len(v) > 1000 and np.quantile(d, 0.95) < 0.03, np.quantile(d, [0.5, 0.9, 0.95, 0.99])
