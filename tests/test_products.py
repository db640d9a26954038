"""The map products as a package: the MapView protocol, chunked field queries, files (mesh and
occupancy map) and empty maps. Meshes: test_products_mesh.py; occupancy and ESDF:
test_products_occupancy.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from analytic_scenes import AnalyticMap, observed_room, scene_sdf
from neural_mapping import products as P


@pytest.fixture(scope="module")
def room_map() -> AnalyticMap:
    return observed_room()


# ----------------------------------------------------------------------------- the package

def test_the_package_exports_the_products_and_maps_are_map_views():
    for name in P.__all__:
        assert getattr(P, name) is not None
    assert (P.FREE_CELL, P.OCCUPIED_CELL, P.UNKNOWN_CELL) == (0, 100, -1)
    m = AnalyticMap()
    assert isinstance(m, P.MapView) and m.snapshot() is m
    assert not isinstance(SimpleNamespace(cfg=m.cfg, coverage=m.coverage), P.MapView)


def test_a_mapper_is_a_map_view():
    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.mapper import Mapper

    m = Mapper(apply_overrides(preset("cpu"), {"encoding.hash_log2_table": 10, "encoding.hash_levels": 4}))
    assert isinstance(m, P.MapView) and isinstance(m.snapshot(), P.MapView)


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

    class Sphere(AnalyticMap):  # cheap exact field: the test measures the chunking, not a network
        def query(self, pts_W, want_gradient=False, want_color=False, chunk=0):
            n = np.linalg.norm(pts_W, axis=1, keepdims=True)
            return SimpleNamespace(sdf=(n[:, 0] - 1.0), occupancy=np.full(len(n), 0.5, np.float32),
                                   gradient=pts_W / np.maximum(n, 1e-9) if want_gradient else None, color=None)

    N = 10_000_000
    pts = np.empty((N, 3), np.float32)
    pts[:, 0] = np.linspace(-2, 2, N, dtype=np.float32)
    pts[:, 1:] = 0.5
    chunk = 1 << 18
    sphere = Sphere()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    r = P.query_field(sphere, pts, want_gradient=True, chunk=chunk)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    outputs = N * 4 * (1 + 1 + 3)  # sdf, occupancy, gradient float32 = 200 MB
    per_chunk = chunk * 3 * 4 * 8  # a few float32 (chunk, 3) temporaries = 25 MB
    assert peak < outputs + per_chunk, f"peak {peak / 2**20:.0f} MB"
    i = N // 3
    assert r.sdf[i] == pytest.approx(np.linalg.norm(pts[i]) - 1.0, abs=1e-6)
    np.testing.assert_allclose(r.gradient[i], pts[i] / np.linalg.norm(pts[i]), atol=1e-6)


# ----------------------------------------------------------------------------- files and empty maps

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


def test_empty_map_gives_empty_products(tmp_path):
    import open3d as o3d

    m = AnalyticMap()
    assert len(P.extract_mesh(m).triangles) == 0
    P.save_mesh(P.extract_mesh(m), tmp_path / "empty.ply")  # written, readable, empty
    assert len(o3d.io.read_triangle_mesh(str(tmp_path / "empty.ply")).vertices) == 0
    assert P.occupancy_slice_2d(m, 0.1, 1.0, 0.1).data.size == 0
