"""Occupancy and ESDF products on an analytic field (exact SDF of a box room with a box and a
sphere): 3D voxels, the 2D slice, ESDF slices of sdf and nerf maps."""

from __future__ import annotations

import numpy as np
import pytest

from analytic_scenes import BOX_HI, BOX_LO, SPHERE_C, SPHERE_R, AnalyticMap, observed_room, scene_sdf
from neural_mapping import products as P
from neural_mapping.config import MapperConfig
from neural_mapping.products.lattice import ObservedBoxes


@pytest.fixture(scope="module")
def room_map() -> AnalyticMap:
    return observed_room()


def test_occupancy_3d_matches_the_boxes_and_unknown_stays_unknown(room_map):
    g = P.occupancy_grid_3d(room_map, resolution=0.1)
    # lattice aligned: origin a multiple of the resolution
    np.testing.assert_allclose(g.origin / 0.1, np.round(g.origin / 0.1), atol=1e-9)
    pts = np.array([
        [2.55, 1.65, 0.95],  # free: halfway between the camera and the box it looked at
        [2.55, 1.85, 0.75],  # inside the box, just below its observed top -> occupied
        [SPHERE_C[0], SPHERE_C[1] - SPHERE_R + 0.02, SPHERE_C[2]],  # in the sphere's front skin
        [2.0, 1.0, 3.5],  # above the ceiling: never observed
        [2.9, 2.2, 0.3],  # deep inside the box: never observed
    ])
    st = g.state_at(pts)
    assert list(st) == [P.FREE_CELL, P.OCCUPIED_CELL, P.OCCUPIED_CELL, P.UNKNOWN_CELL, P.UNKNOWN_CELL]
    # every known voxel agrees with the exact SDF at its centre
    c = g.centers()
    flat = g.data.reshape(-1)
    known = flat != P.UNKNOWN_CELL
    s = scene_sdf(c[known])
    expect = np.where(s <= 0.05, P.OCCUPIED_CELL, P.FREE_CELL)  # touching the surface, or inside
    clear = np.abs(s - 0.05) > 1e-4  # walls lie on the lattice: centres at exactly 0.05 are ties
    np.testing.assert_array_equal(flat[known][clear], expect[clear])
    # unknown stays unknown: nothing is decided in voxels that overlap no observed voxel
    seen = ObservedBoxes(room_map.coverage, dilate=0).any_in_boxes(c - 0.0499, c + 0.0499)
    assert not (known & ~seen).any()
    assert known.sum() > 1000


def test_occupancy_of_a_steep_sdf_uses_its_first_order_distance(room_map):
    # a learned sdf is often steeper than a distance (|grad| > 1): twice the exact SDF must give
    # the same voxels (distance = sdf / |grad|), while the raw value would free the surface skin
    steep = AnalyticMap(lambda p: 2.0 * scene_sdf(p))
    steep.coverage = room_map.coverage
    exact = P.occupancy_grid_3d(room_map, resolution=0.1)
    g = P.occupancy_grid_3d(steep, resolution=0.1)
    c = exact.centers()
    s = scene_sdf(c)
    h = 1e-5
    gn = np.linalg.norm([(scene_sdf(c + e) - scene_sdf(c - e)) / (2 * h) for e in np.eye(3) * h], axis=0)
    regular = (np.abs(gn - 1) < 1e-3) & (np.abs(s - 0.05) > 1e-4)  # off the medial axis and the ties
    assert regular.mean() > 0.7
    np.testing.assert_array_equal(g.data.reshape(-1)[regular], exact.data.reshape(-1)[regular])
    class NoGradient(AnalyticMap):  # a duck-typed map that gives no gradient: its sdf is used as it is
        def query(self, pts_W, want_gradient=False, want_color=False, chunk=65536):
            return super().query(pts_W, False, want_color, chunk)

    plain = NoGradient()
    plain.coverage = room_map.coverage
    np.testing.assert_array_equal(P.occupancy_grid_3d(plain, resolution=0.1).data, exact.data)
    skin = (exact.data.reshape(-1) == P.OCCUPIED_CELL) & (s > 0.026) & (s < 0.049)
    assert skin.sum() > 10  # cells the raw steep value (> 0.05) would have called free


def test_occupancy_slice_origin_resolution_and_values(room_map):
    sl = P.occupancy_slice_2d(room_map, z_min=0.3, z_max=0.7, resolution=0.1)
    lo, hi = room_map.bounds()
    np.testing.assert_allclose(sl.origin_xy, np.floor(lo[:2] / 0.1 + 1e-9) * 0.1)
    assert sl.data.shape == (int(np.ceil(hi[1] / 0.1 - 1e-9) - np.floor(lo[1] / 0.1 + 1e-9)),
                             int(np.ceil(hi[0] / 0.1 - 1e-9) - np.floor(lo[0] / 0.1 + 1e-9)))
    assert sl.resolution == 0.1 and sl.data.dtype == np.int8
    assert set(np.unique(sl.data)) <= {-1, 0, 100}

    def cell(x, y):  # row 0 at min y, column 0 at min x
        return sl.data[int((y - sl.origin_xy[1]) // 0.1), int((x - sl.origin_xy[0]) // 0.1)]

    assert cell(2.55, 1.85) == 100  # the box's observed corner region
    assert cell(3.05, 1.85) == 100  # the box's front face (y = 1.8) in the band
    assert cell(2.05, 1.05) != 100  # under the camera: free or unknown, never occupied
    assert cell(2.05, 2.25) == 0  # open floor in view at every height of the band
    # no cell inside the box is free (inside = unknown or occupied)
    ys, xs = np.mgrid[0:sl.data.shape[0], 0:sl.data.shape[1]]
    cx = sl.origin_xy[0] + (xs + 0.5) * 0.1
    cy = sl.origin_xy[1] + (ys + 0.5) * 0.1
    inside = (cx > BOX_LO[0]) & (cx < BOX_HI[0]) & (cy > BOX_LO[1]) & (cy < BOX_HI[1])
    assert inside.sum() > 20
    assert not (sl.data[inside] == 0).any()
    # outside the walls: never observed -> unknown
    outside = (cx < -0.05) | (cy < -0.05) | (cx > 4.05) | (cy > 3.05)
    assert (sl.data[outside] == -1).all()


def test_esdf_slice_equals_the_field_with_gradients(room_map):
    es = P.esdf_slice(room_map, z=1.0, resolution=0.1, want_gradient=True)
    H, W = es.distance.shape
    ys, xs = np.mgrid[0:H, 0:W]
    pts = np.stack([es.origin_xy[0] + (xs + 0.5) * 0.1, es.origin_xy[1] + (ys + 0.5) * 0.1, np.full(xs.shape, 1.0)], -1)
    k = es.known
    assert 0.2 < k.mean() < 1.0
    np.testing.assert_allclose(es.distance[k], scene_sdf(pts[k]), atol=1e-5)
    # at (2, 1.5, 1): nearest surface is the floor/ceiling? no: the sphere (1.2, 2.2, 1) is 1.06 - 0.3 away
    p = np.array([[2.05, 1.55, 1.0]])
    i, j = int((1.55 - es.origin_xy[1]) // 0.1), int((2.05 - es.origin_xy[0]) // 0.1)
    assert es.distance[i, j] == pytest.approx(float(scene_sdf(p)[0]), abs=1e-5)
    with room_map.lock:
        g_true = room_map.query(pts[k].astype(np.float32), want_gradient=True).gradient
    np.testing.assert_allclose(es.gradient[k], g_true, atol=1e-6)
    assert np.median(np.linalg.norm(es.gradient[k], axis=1)) == pytest.approx(1.0, abs=1e-3)
    assert np.isnan(es.distance[~k]).all()


def test_esdf_slice_from_occupancy_for_nerf_maps(room_map):
    cfg = MapperConfig()
    cfg.field.kind = "nerf"
    m = AnalyticMap(cfg=cfg)
    m.coverage = room_map.coverage
    es = P.esdf_slice(m, z=1.025, resolution=0.05)  # 1.025: a layer of voxel centres
    k = es.known
    H, W = es.distance.shape
    ys, xs = np.mgrid[0:H, 0:W]
    pts = np.stack([es.origin_xy[0] + (xs + 0.5) * 0.05, es.origin_xy[1] + (ys + 0.5) * 0.05, np.full(xs.shape, 1.025)], -1)
    truth = scene_sdf(pts[k])
    err = np.abs(es.distance[k] - truth)
    assert np.median(err) <= 0.05  # centre-to-centre distances: within a cell of the truth
    # exactly the distance from each known free cell to the nearest occupied voxel centre in 3D
    from scipy.spatial import cKDTree

    g = P.occupancy_grid_3d(m, 0.05)
    occ_c = g.centers()[g.data.reshape(-1) == P.OCCUPIED_CELL]
    free = es.distance[k] > 0
    d_nn, _ = cKDTree(occ_c).query(pts[k][free])
    np.testing.assert_allclose(es.distance[k][free], d_nn, atol=1e-5)
    # between layers: linear in z (z = 1.0 is halfway between the layers at 0.975 and 1.025)
    below = P.esdf_slice(m, z=0.975, resolution=0.05, want_gradient=True)
    mid = P.esdf_slice(m, z=1.0, resolution=0.05, want_gradient=True)
    both = mid.known & below.known & es.known
    assert both.sum() > 100
    np.testing.assert_allclose(mid.distance[both], 0.5 * (below.distance + es.distance)[both], atol=1e-6)
    assert mid.gradient.shape == (H, W, 3)
