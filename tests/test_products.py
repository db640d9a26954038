"""Map products on an analytic field (exact SDF of a box room with a box and a sphere) and
on a learned map: mesh, 3D occupancy, 2D slice, ESDF slice, PGM/YAML, chunked queries."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from neural_mapping.camera import intrinsics
from neural_mapping.config import MapperConfig
from neural_mapping.coverage import Coverage
from neural_mapping.frame import Frame
from neural_mapping import products as P

ROOM_LO = np.array([0.0, 0.0, 0.0])
ROOM_HI = np.array([4.0, 3.0, 2.5])
BOX_LO = np.array([2.5, 1.8, 0.0])
BOX_HI = np.array([3.3, 2.6, 0.8])
SPHERE_C = np.array([1.2, 2.2, 1.0])
SPHERE_R = 0.3
EYE = np.array([2.0, 1.0, 1.4])


# ----------------------------------------------------------------------------- analytic scene

def sdf_box(p, lo, hi):
    c, h = (lo + hi) / 2, (hi - lo) / 2
    q = np.abs(p - c) - h
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def scene_sdf(p):
    """Exact signed distance (m) inside the room: walls, a box on the floor, a sphere."""
    room = np.minimum((p - ROOM_LO).min(1), (ROOM_HI - p).min(1))
    return np.minimum.reduce([room, sdf_box(p, BOX_LO, BOX_HI), np.linalg.norm(p - SPHERE_C, axis=1) - SPHERE_R])


def scene_color(p):
    return np.clip(p / ROOM_HI, 0, 1).astype(np.float32)


class AnalyticMap:
    """The duck-typed mapper interface the products use, answering with an exact SDF."""

    def __init__(self, sdf=scene_sdf, cfg: MapperConfig | None = None, coverage_voxel: float = 0.05):
        self.sdf_fn = sdf
        self.cfg = cfg or MapperConfig()
        self.coverage = Coverage(coverage_voxel)
        self.lock = threading.RLock()
        self.n_queried = 0
        self.max_chunk = 0
        self.stats = SimpleNamespace(steps=0)  # bumped by a test that changes sdf_fn (as training would)

    def add_frame(self, frame: Frame) -> None:
        # stride 1: the test images are small (rays 1-2 cm apart at 1.5 m, like 640x480 at stride 4)
        self.coverage.update(frame, max_depth_m=self.cfg.render.max_depth_m, stride=1)

    def bounds(self):
        b = self.coverage.bounds()
        if b is None:
            return None
        return b[0] - self.cfg.field.margin_m, b[1] + self.cfg.field.margin_m

    def query(self, pts_W, want_gradient=False, want_color=False, chunk=65536):
        assert self.lock._is_owned()  # products hold the lock: one snapshot
        p = np.asarray(pts_W, np.float64)
        self.n_queried += len(p)
        self.max_chunk = max(self.max_chunk, len(p))
        s = self.sdf_fn(p)
        g = None
        if want_gradient:
            h, g = 1e-5, np.empty((len(p), 3))
            for i in range(3):
                e = np.zeros(3)
                e[i] = h
                g[:, i] = (self.sdf_fn(p + e) - self.sdf_fn(p - e)) / (2 * h)
        occ = np.where(self.coverage.observed(p), 1 / (1 + np.exp(np.clip(s / 0.01, -50, 50))), 0.5)
        return SimpleNamespace(sdf=s.astype(np.float32), gradient=None if g is None else g.astype(np.float32),
                               occupancy=occ.astype(np.float32), color=scene_color(p) if want_color else None)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    eye = np.asarray(eye, float)
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(z, x), z, eye
    return T


def render_depth(sdf, T_WC, K, H, W, max_t=10.0) -> np.ndarray:
    """z-depth (H, W) by sphere tracing an exact SDF."""
    v, u = np.mgrid[0:H, 0:W]
    d_C = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
    d_W = d_C @ T_WC[:3, :3].T
    n = np.linalg.norm(d_W, axis=1)
    unit = d_W / n[:, None]
    o, t, alive = T_WC[:3, 3], np.zeros(len(unit)), np.ones(len(unit), bool)
    for _ in range(300):
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        s = sdf(o + unit[idx] * t[idx, None])
        t[idx] += s
        alive[idx[(np.abs(s) < 1e-7) | (t[idx] > max_t)]] = False
    return np.where(t < max_t, t / n, 0.0).reshape(H, W).astype(np.float32)


def frame_at(sdf, T_WC, H=90, W=120, f=75.0) -> Frame:
    K = intrinsics(f, f, (W - 1) / 2, (H - 1) / 2)
    return Frame(np.zeros((H, W, 3), np.uint8), render_depth(sdf, T_WC, K, H, W), K, T_WC)


TARGETS = ([3.0, 2.2, 0.4], [1.2, 2.2, 1.0], [0.0, 0.0, 1.2], [4.0, 0.0, 1.0], [4.0, 3.0, 1.5], [0.0, 3.0, 0.5])


@pytest.fixture(scope="module")
def room_map() -> AnalyticMap:
    m = AnalyticMap()
    for tgt in TARGETS:
        m.add_frame(frame_at(scene_sdf, look_at(EYE, tgt)))
    return m


# ----------------------------------------------------------------------------- mesh

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
    assert P._ObservedBoxes(m.coverage, dilate=3).contains(verts).all()
    assert not P._ObservedBoxes(m.coverage, dilate=0).contains(verts).all()  # the margin is used


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
            assert ex.stats.tiles_recomputed <= P._BUDGET_BATCH
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


def test_mesh_export_ply_and_obj_round_trip(room_map, tmp_path):
    import open3d as o3d

    mesh = P.extract_mesh(room_map, voxel_m=0.08)
    for ext in ("ply", "obj"):
        path = tmp_path / f"m.{ext}"
        P.save_mesh(mesh, path)
        back = o3d.io.read_triangle_mesh(str(path))
        assert len(back.triangles) == len(mesh.triangles)
        a = np.unique(np.round(np.asarray(back.vertices), 5), axis=0)
        b = np.unique(np.round(np.asarray(mesh.vertices), 5), axis=0)
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="ply or .obj"):
        P.save_mesh(mesh, tmp_path / "m.stl")


def test_empty_map_gives_empty_products(tmp_path):
    import open3d as o3d

    m = AnalyticMap()
    assert len(P.extract_mesh(m).triangles) == 0
    P.save_mesh(P.extract_mesh(m), tmp_path / "empty.ply")  # written, readable, empty
    assert len(o3d.io.read_triangle_mesh(str(tmp_path / "empty.ply")).vertices) == 0
    assert P.occupancy_slice_2d(m, 0.1, 1.0, 0.1).data.size == 0


# ----------------------------------------------------------------------------- occupancy

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
    seen = P._ObservedBoxes(room_map.coverage, dilate=0).any_in_boxes(c - 0.0499, c + 0.0499)
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


def test_pgm_yaml_round_trip(room_map, tmp_path):
    sl = P.occupancy_slice_2d(room_map, z_min=0.3, z_max=0.7, resolution=0.1)
    pgm, yml = P.write_occupancy_map(sl, str(tmp_path / "map"))
    text = open(yml).read()
    assert "image: map.pgm" in text and "mode: trinary" in text and "resolution: 0.1" in text
    raw = open(pgm, "rb").read()
    assert raw.startswith(b"P5\n")
    back = P.read_occupancy_map(yml)
    np.testing.assert_array_equal(back.data, sl.data)
    np.testing.assert_allclose(back.origin_xy, sl.origin_xy)
    assert back.resolution == pytest.approx(0.1)
    # image row 0 is the top (max y): the first PGM row equals the last slice row
    H, W = sl.data.shape
    img = np.frombuffer(raw[-H * W:], np.uint8).reshape(H, W)
    expect_top = np.select([sl.data[-1] == 100, sl.data[-1] == 0], [0, 254], 205)
    np.testing.assert_array_equal(img[0], expect_top)


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


# ----------------------------------------------------------------------------- queries

def test_query_field_chunks_hold_the_lock_and_match_one_call(room_map):
    pts = np.random.default_rng(1).uniform(-0.5, 4.5, size=(10_001, 3)).astype(np.float32)
    room_map.max_chunk = 0
    a = P.query_field(room_map, pts, want_gradient=True, want_color=True, chunk=1000)
    assert room_map.max_chunk == 1000
    np.testing.assert_allclose(a.sdf, scene_sdf(pts.astype(np.float64)), atol=1e-6)
    assert a.gradient.shape == (10_001, 3) and a.color.shape == (10_001, 3)
    b = P.query_field(room_map, pts, want_gradient=True, chunk=1 << 20)
    np.testing.assert_array_equal(a.sdf, b.sdf)
    np.testing.assert_array_equal(a.occupancy, b.occupancy)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        P.query_field(room_map, np.zeros((5, 2)))


def test_query_field_waits_for_a_training_step():
    """A query issued while another thread holds the lock answers after it is released."""
    m = AnalyticMap()
    order = []
    m.lock.acquire()

    def q():
        P.query_field(m, np.zeros((3, 3)))
        order.append("query")

    t = threading.Thread(target=q)
    t.start()
    t.join(0.2)
    order.append("step done")
    m.lock.release()
    t.join(5)
    assert order == ["step done", "query"]


def test_query_of_10M_points_stays_within_a_memory_bound():
    import tracemalloc

    class Sphere:  # cheap exact field: the test measures the chunking, not a network
        cfg = MapperConfig()
        lock = threading.RLock()

        def query(self, pts_W, want_gradient=False, want_color=False, chunk=0):
            n = np.linalg.norm(pts_W, axis=1, keepdims=True)
            return SimpleNamespace(sdf=(n[:, 0] - 1.0), occupancy=np.full(len(n), 0.5, np.float32),
                                   gradient=pts_W / np.maximum(n, 1e-9) if want_gradient else None, color=None)

    N = 10_000_000
    pts = np.empty((N, 3), np.float32)
    pts[:, 0] = np.linspace(-2, 2, N, dtype=np.float32)
    pts[:, 1:] = 0.5
    chunk = 1 << 18
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    r = P.query_field(Sphere(), pts, want_gradient=True, chunk=chunk)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    outputs = N * 4 * (1 + 1 + 3)  # sdf, occupancy, gradient float32 = 200 MB
    per_chunk = chunk * 3 * 4 * 8  # a few float32 (chunk, 3) temporaries = 25 MB
    assert peak < outputs + per_chunk, f"peak {peak / 2**20:.0f} MB"
    i = N // 3
    assert r.sdf[i] == pytest.approx(np.linalg.norm(pts[i]) - 1.0, abs=1e-6)
    np.testing.assert_allclose(r.gradient[i], pts[i] / np.linalg.norm(pts[i]), atol=1e-6)


# ----------------------------------------------------------------------------- learned map

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
    snap = P._snapshot(m)
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
