"""Meshes of the map products: on an analytic field (exact SDF of a box room with a box and a
sphere; block-sparse, incremental, time-budgeted extraction) and on learned maps."""

from __future__ import annotations

import numpy as np
import pytest

from analytic_scenes import (EYE, SPHERE_C, SPHERE_R, TARGETS, AnalyticMap, frame_at, look_at, observed_room,
                             scene_color, scene_sdf)
from neural_mapping import products as P
from neural_mapping.config import MapperConfig
from neural_mapping.products.lattice import ObservedBoxes
from neural_mapping.products.mesh import _BUDGET_BATCH


@pytest.fixture(scope="module")
def room_map() -> AnalyticMap:
    return observed_room()


# ----------------------------------------------------------------------------- analytic field

def test_mesh_lies_on_the_analytic_surface_and_is_block_sparse(room_map):
    room_map.n_queried = 0
    ex = P.MeshExtractor(room_map, voxel_m=0.04, color=False)
    verts, faces, _ = ex.extract_arrays()
    assert len(faces) > 10_000
    assert np.abs(scene_sdf(verts)).max() < 0.004  # linear interpolation of an exact SDF on 4 cm cubes
    # the sphere is meshed where it was seen: vertices at distance R from its centre
    near = np.linalg.norm(verts - SPHERE_C, axis=1) < SPHERE_R + 0.05
    assert near.sum() > 100
    np.testing.assert_allclose(np.linalg.norm(verts[near] - SPHERE_C, axis=1), SPHERE_R, atol=0.004)
    # block-sparse: far fewer queries than the dense vertex grid over the bounds
    lo, hi = room_map.bounds()
    dense = np.prod(np.ceil((hi - lo) / 0.04) + 1)
    assert ex.stats.points_queried == room_map.n_queried
    assert ex.stats.points_queried < 0.5 * dense
    # faces oriented outward from the surface (along the SDF gradient, into free space)
    mesh = ex.extract()
    n = np.asarray(mesh.triangle_normals)
    c = verts[faces].mean(1)
    outward = scene_sdf(c + 0.01 * n) > scene_sdf(c)
    assert outward.mean() > 0.99


def test_mesh_is_only_where_frames_looked():
    # a second sphere behind the camera: in the field, never in view -> no phantom surface
    hidden_c = EYE + np.array([0.0, -0.6, 0.0])

    def sdf2(p):
        return np.minimum(scene_sdf(p), np.linalg.norm(p - hidden_c, axis=1) - 0.2)

    m = AnalyticMap(sdf2)
    for tgt in TARGETS[:2]:  # looking along +y only; the hidden sphere is at -y
        f = frame_at(scene_sdf, look_at(EYE, tgt))  # depth from the scene without the hidden sphere
        m.add_frame(f)
    verts, faces, _ = P.MeshExtractor(m, voxel_m=0.04, color=False).extract_arrays()
    assert len(faces) > 1000
    assert not (np.linalg.norm(verts - hidden_c, axis=1) < 0.25).any()
    # and nothing beyond the observed voxels dilated by one coverage voxel (5 cm), up to the
    # extractor's finest pruned cell (2 voxels = 8 cm here): within 3 coverage voxels
    assert ObservedBoxes(m.coverage, dilate=3).contains(verts).all()
    assert not ObservedBoxes(m.coverage, dilate=0).contains(verts).all()  # the margin is used


def test_small_fragments_removed_and_colors_from_the_field():
    tiny_c = np.array([2.0, 2.0, 1.4])

    def sdf3(p):
        return np.minimum(scene_sdf(p), np.linalg.norm(p - tiny_c, axis=1) - 0.03)

    m = AnalyticMap(sdf3)
    m.add_frame(frame_at(sdf3, look_at(EYE, [2.0, 3.0, 1.4])))
    keep_all = P.MeshExtractor(m, voxel_m=0.02, min_component_triangles=0, color=True)
    v0, f0, c0 = keep_all.extract_arrays()
    assert (np.linalg.norm(v0 - tiny_c, axis=1) < 0.04).any()
    np.testing.assert_allclose(c0, scene_color(v0), atol=1e-6)
    pruned = P.MeshExtractor(m, voxel_m=0.02, min_component_triangles=200, color=True)
    v1, f1, c1 = pruned.extract_arrays()
    assert not (np.linalg.norm(v1 - tiny_c, axis=1) < 0.04).any()
    assert pruned.stats.components_removed >= 1
    assert len(f1) > 0.9 * len(f0)
    np.testing.assert_allclose(c1, scene_color(v1), atol=1e-6)


def test_incremental_extraction_recomputes_only_changed_tiles_and_matches_full():
    m = AnalyticMap()
    m.add_frame(frame_at(scene_sdf, look_at(EYE, TARGETS[0])))
    ex = P.MeshExtractor(m, voxel_m=0.04, tile_cells=16, color=False)
    ex.extract_arrays()
    again = ex.extract_arrays()
    assert ex.stats.tiles_recomputed == 0 and ex.stats.points_queried == 0
    # a second camera close to the (0, 0) corner sees a small region the first did not
    m.add_frame(frame_at(scene_sdf, look_at([0.6, 0.5, 0.6], [0.0, 0.0, 0.3])))
    vi, fi, _ = ex.extract_arrays()
    assert 0 < ex.stats.tiles_recomputed < 0.5 * ex.stats.tiles_total
    vf, ff, _ = P.MeshExtractor(m, voxel_m=0.04, tile_cells=16, color=False).extract_arrays()
    assert len(ff) == len(fi) and len(vf) == len(vi)
    np.testing.assert_allclose(np.sort(vi, axis=0), np.sort(vf, axis=0), atol=1e-9)
    assert len(again[1]) < len(fi)


def test_incremental_extraction_follows_field_changes_in_changed_tiles_only():
    # the field changes without new observations (as training changes it): the incremental mesh
    # must equal a full extraction while recomputing only the tiles around the change
    def grown(p):  # the sphere grows by 3 cm
        return np.minimum(scene_sdf(p), np.linalg.norm(p - SPHERE_C, axis=1) - (SPHERE_R + 0.03))

    small_c = np.array([1.6, 1.6, 1.2])  # in free space between the eye and the sphere

    def appeared(p):  # a small object appears in observed free space
        return np.minimum(grown(p), np.linalg.norm(p - small_c, axis=1) - 0.1)

    m = AnalyticMap()
    for tgt in TARGETS[:2]:
        m.add_frame(frame_at(scene_sdf, look_at(EYE, tgt)))
    ex = P.MeshExtractor(m, voxel_m=0.04, tile_cells=16, color=False)
    ex.extract_arrays()
    m.stats.steps += 1  # a training step that did not change this field: nothing recomputed
    ex.extract_arrays()
    assert ex.stats.tiles_recomputed == 0 and ex.stats.points_probed > 0
    for fn in (grown, appeared):
        m.sdf_fn = fn
        m.stats.steps += 1
        vi, fi, _ = ex.extract_arrays()
        assert 0 < ex.stats.tiles_recomputed < 0.5 * ex.stats.tiles_total
        vf, ff, _ = P.MeshExtractor(m, voxel_m=0.04, tile_cells=16, color=False).extract_arrays()
        assert len(ff) == len(fi) and len(vf) == len(vi)
        np.testing.assert_allclose(np.sort(vi, axis=0), np.sort(vf, axis=0), atol=1e-9)
    assert (np.abs(np.linalg.norm(vi - small_c, axis=1) - 0.1) < 0.005).sum() > 50  # the new object is meshed
    assert (np.abs(np.linalg.norm(vi - SPHERE_C, axis=1) - SPHERE_R - 0.03) < 0.005).sum() > 50


def test_mesh_extractor_refuses_bad_settings():
    m = AnalyticMap()
    for bad, why in (({"tile_cells": 12}, "tile_cells must be a power of two"),
                     ({"change_tol": 0.0}, "change_tol must be positive"),
                     ({"change_tol": -1.0}, "change_tol must be positive"),
                     ({"voxel_m": 0.0}, "mesh voxel must be positive")):
        with pytest.raises(ValueError, match=why):
            P.MeshExtractor(m, **bad)


def test_time_budgeted_extraction_converges_to_the_full_mesh():
    m = AnalyticMap()
    for tgt in TARGETS[:2]:
        m.add_frame(frame_at(scene_sdf, look_at(EYE, tgt)))

    def converge(ex):
        calls = 0
        while True:
            v, f, _ = ex.extract_arrays(budget_s=0.0)  # one batch of tiles per call
            calls += 1
            assert ex.stats.tiles_recomputed <= _BUDGET_BATCH
            if ex.stats.tiles_pending == 0:
                return v, f, calls

    ex = P.MeshExtractor(m, voxel_m=0.04, tile_cells=8, color=False)
    for change in (False, True):
        if change:  # the sphere grows (a training step moved the field)
            m.sdf_fn = lambda p: np.minimum(scene_sdf(p), np.linalg.norm(p - SPHERE_C, axis=1) - SPHERE_R - 0.03)
            m.stats.steps += 1
        v, f, calls = converge(ex)
        assert calls > 1
        vf, ff, _ = P.MeshExtractor(m, voxel_m=0.04, tile_cells=8, color=False).extract_arrays()
        assert len(ff) == len(f)
        np.testing.assert_allclose(np.sort(v, axis=0), np.sort(vf, axis=0), atol=1e-9)
    ex.extract_arrays(budget_s=0.0)
    assert ex.stats.tiles_recomputed == 0 and ex.stats.points_queried == 0  # converged: the cached mesh


# ----------------------------------------------------------------------------- learned maps

def test_mesh_of_a_learned_sphere_is_within_1cm_of_its_radius():
    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.mapper import Mapper

    R = 0.5

    def sdf(p):  # a sphere inside a 4 m box room
        return np.minimum(np.minimum((p + 2.0).min(1), (2.0 - p).min(1)), np.linalg.norm(p, axis=1) - R)

    cfg = apply_overrides(preset("cpu"), {
        "encoding.hash_log2_table": 12, "encoding.hash_levels": 6, "encoding.hash_finest_m": 0.04,
        "train.rays_per_step": 512, "render.n_stratified": 4, "render.n_surface": 6})
    m = Mapper(cfg)
    for i in range(8):
        a = 2 * np.pi * i / 8
        eye = [1.5 * np.cos(a), 1.5 * np.sin(a), 0.6 * np.sin(3 * a)]
        assert m.add_frame(frame_at(sdf, look_at(eye, [0.0, 0.0, 0.0]), H=48, W=64, f=56.0))
    m.step(60)
    v, f, c = P.MeshExtractor(m, voxel_m=0.02).extract_arrays()
    r = np.linalg.norm(v[np.linalg.norm(v, axis=1) < 0.8], axis=1)
    assert len(r) > 2000  # the sphere is there
    # robust to the few blobs a briefly trained field leaves in free space: medians
    assert abs(np.median(r) - R) < 0.01
    assert np.median(np.abs(r - R)) < 0.01
    # and the whole sphere is meshed: points on it (seen by the 8 views around the equator)
    # are near the mesh
    from neural_mapping.evaluation import distance_to_mesh

    mesh = P.MeshExtractor(m, voxel_m=0.02, color=False).extract()
    u = np.random.default_rng(0).normal(size=(2000, 3))
    u = u[np.abs(u[:, 2]) < 0.5 * np.linalg.norm(u, axis=1)]  # |latitude| < 30 deg
    on_sphere = R * u / np.linalg.norm(u, axis=1, keepdims=True)
    d = distance_to_mesh(on_sphere, mesh)
    assert np.median(d) < 0.01 and np.percentile(d, 90) < 0.02
    assert c is not None and c.shape == (len(v), 3) and np.all((c >= 0) & (c <= 1))


def test_nerf_map_meshes_its_occupancy_half_level():
    """A density field (nerf kind): the mesh is the 0.5 level of occupancy = 1 - exp(-density * res)."""
    cfg = MapperConfig()
    cfg.field.kind = "nerf"
    res = cfg.occupancy.resolution_m

    def density(p):
        return 50.0 / (1.0 + np.exp(np.clip((np.linalg.norm(p - SPHERE_C, axis=1) - SPHERE_R) / 0.01, -50, 50)))

    class DensityMap(AnalyticMap):
        def query(self, pts_W, want_gradient=False, want_color=False, chunk=65536):
            r = super().query(pts_W, want_gradient=False, want_color=want_color)
            r.sdf = density(np.asarray(pts_W, np.float64)).astype(np.float32)  # the value is a density
            return r

        def occupancy_from_value(self, vals):
            return (1.0 - np.exp(-np.maximum(vals, 0) * res)).astype(np.float32)

    m = DensityMap(cfg=cfg)
    for tgt in TARGETS[:2]:
        m.add_frame(frame_at(scene_sdf, look_at(EYE, tgt)))
    v, f, _ = P.MeshExtractor(m, voxel_m=0.02, color=False).extract_arrays()
    # occupancy 0.5 <=> density = ln 2 / res <=> sigmoid(-(r - R) / 0.01) = ln 2 / (50 res)
    q = np.log(2) / (50 * res)
    r_level = SPHERE_R + 0.01 * np.log(1 / q - 1)
    r = np.linalg.norm(v - SPHERE_C, axis=1)
    assert len(v) > 200
    np.testing.assert_allclose(r, r_level, atol=0.003)  # only the sphere: no level set on the coverage border


def test_meshing_a_mapper_uses_a_snapshot_and_leaves_the_rng_alone():
    """The extractor copies a real Mapper under its lock and meshes the copy: the live map can
    train meanwhile, and building the copy does not reseed torch's global RNG."""
    import torch

    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.mapper import Mapper

    cfg = apply_overrides(preset("cpu"), {"encoding.hash_log2_table": 10, "encoding.hash_levels": 4,
                                          "train.rays_per_step": 64})
    m = Mapper(cfg)
    for tgt in TARGETS[:2]:
        assert m.add_frame(frame_at(scene_sdf, look_at(EYE, tgt), H=30, W=40, f=25.0))
    m.step(20)  # a surface is there after ~15 steps of this tiny model (not before: all free space)
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    ex = P.MeshExtractor(m, voxel_m=0.1, color=False, min_component_triangles=0)
    snap = m.snapshot()
    assert snap is not m and snap.field is not m.field
    v1, f1, _ = ex.extract_arrays()
    np.testing.assert_array_equal(torch.rand(3).numpy(), expect.numpy())  # RNG untouched
    v2, f2, _ = P.MeshExtractor(m, voxel_m=0.1, color=False, snapshot=False, min_component_triangles=0).extract_arrays()
    assert len(f1) > 0
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(f1, f2)
    pts = np.random.default_rng(0).uniform(0, 3, size=(100, 3)).astype(np.float32)
    np.testing.assert_array_equal(snap.query(pts).sdf, m.query(pts).sdf)
    # after more training the extractor reloads its copy (same modules) and meshes the new field
    copy1 = ex._copy
    m.step(10)
    torch.manual_seed(7)
    expect = torch.rand(3)
    torch.manual_seed(7)
    v3, f3, _ = ex.extract_arrays(full=True)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expect.numpy())
    assert ex._copy is copy1
    assert v3.shape != v1.shape or not np.array_equal(v3, v1)  # the field moved: a stale copy would not show it
    v4, f4, _ = P.MeshExtractor(m, voxel_m=0.1, color=False, snapshot=False, min_component_triangles=0).extract_arrays()
    np.testing.assert_array_equal(v3, v4)
    np.testing.assert_array_equal(f3, f4)
