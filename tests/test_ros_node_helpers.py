"""Pure helpers of the node's parts (no DDS): input width, product flattening, render camera, init thread."""

import numpy as np
import pytest

from neural_mapping.ros.inputs import auto_input_max_width
from neural_mapping.ros.node import _in_exiting_thread
from neural_mapping.ros.publishing import esdf_points, occupied_centres, render_camera


def test_occupied_centres_and_esdf_points():
    from neural_mapping.products import EsdfSlice, OccupancyGrid3D

    data = np.zeros((2, 2, 2), np.int8)
    data[1, 0, 1] = 100
    g = OccupancyGrid3D(data=data, origin=np.array([1.0, 2.0, 3.0]), resolution=0.5)
    np.testing.assert_allclose(occupied_centres(g), [[1.75, 2.25, 3.75]])
    d = np.array([[0.5, np.nan], [np.nan, -0.25]], np.float32)
    es = EsdfSlice(distance=d, origin_xy=np.array([0.0, 0.0]), resolution=1.0, z=0.7)
    pts, dist = esdf_points(es, 0.7)
    np.testing.assert_allclose(pts, [[0.5, 0.5, 0.7], [1.5, 1.5, 0.7]])
    np.testing.assert_allclose(dist, [0.5, -0.25])


def test_auto_input_width():
    assert auto_input_max_width(0, "cpu") == 320 and auto_input_max_width(0, "cuda") is None
    assert auto_input_max_width(-1, "cpu") is None and auto_input_max_width(500, "cuda") == 500


def test_render_camera_resizes_the_latest_frames_intrinsics_at_the_chosen_pose():
    from types import SimpleNamespace

    from neural_mapping.camera import scale_intrinsics

    assert render_camera(None, None, 48, 64) is None  # no pose yet
    K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
    T_last, T_set = np.eye(4), np.diag([1.0, -1.0, -1.0, 1.0])
    last = SimpleNamespace(K=K, T_WC=T_last, height=120, width=160)
    T, K2 = render_camera(last, None, 48, 64)
    assert T is T_last
    np.testing.assert_allclose(K2, scale_intrinsics(K, 64 / 160, 48 / 120))
    np.testing.assert_allclose(K2, [[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]])  # centred stays centred
    T, K3 = render_camera(None, T_set, 48, 64)  # ~/render_pose before any frame: a 60 degree view
    assert T is T_set and K3[0, 2] == pytest.approx(31.5) and K3[0, 0] == pytest.approx(32 / np.tan(np.radians(30)))


def test_mesh_of_a_refreshed_snapshot_is_incremental_and_equals_a_full_extraction():
    """The node keeps one MeshExtractor on its products' copy of the map: after the copy is refreshed
    with a new frame (coverage copied with its update stamps), only the tiles the frame touched are
    recomputed and the mesh is that of a full extraction."""
    import copy

    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper
    from neural_mapping.products import MeshExtractor

    seq = synthetic_sequence(n_frames=12, width=80, height=60, seed=2)
    m = Mapper(preset("cpu"))
    for f in seq.frames[:8]:
        m.add_frame(f)
    m.step(3)
    snap = Mapper.from_state_dict(m.state_dict(include_coverage=False), coverage=copy.deepcopy(m.coverage))
    ex = MeshExtractor(snap, voxel_m=0.1, tile_cells=4, snapshot=False)
    ex.extract_arrays(full=False)
    m.add_frame(seq.frames[11])  # new coverage, same weights
    snap.load_state_dict(m.state_dict(include_coverage=False), coverage=copy.deepcopy(m.coverage))
    verts, faces, _ = ex.extract_arrays(full=False)
    assert 0 < ex.stats.tiles_recomputed < ex.stats.tiles_total
    v_full, f_full, _ = MeshExtractor(snap, voxel_m=0.1, tile_cells=4, snapshot=False).extract_arrays(full=True)
    assert len(faces) == len(f_full) > 0
    # equal to float32 rounding: the kept tiles' field values were computed in other batches than the
    # full extraction's (seen: 1.4e-7 m on 1 of 14340 coordinates)
    np.testing.assert_allclose(np.sort(verts, axis=0), np.sort(v_full, axis=0), atol=1e-6)


def test_in_exiting_thread_returns_raises_and_leaves_no_thread():
    import threading

    me = threading.get_ident()
    assert _in_exiting_thread(lambda: threading.get_ident()) != me  # computed elsewhere
    assert _in_exiting_thread(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        _in_exiting_thread(lambda: 1 / 0)
    assert not any(t.name == "neural_mapper_init" for t in threading.enumerate())


def test_achieved_rate_is_the_rate_of_the_ticks_served_in_the_window_since_products_could_run():
    from neural_mapping.ros.publishing import ACHIEVED_WINDOW_S, Product

    p = Product("mesh", "mesh_rate_hz", lambda: None)
    assert p.achieved_hz(100.0, 0.0) == 0.0
    p.served.extend([10.0, 20.0, 30.0, 40.0])
    assert p.achieved_hz(45.0, 0.0) == pytest.approx(0.1)  # every 10 s
    assert p.achieved_hz(50.0, 49.5) == 0.0  # under a second of history: no figure yet
    assert p.achieved_hz(45.0, 25.0) == pytest.approx(0.1)  # since eligible: 30 and 40
    assert p.achieved_hz(90.0, 0.0) == pytest.approx(4 / 80)  # none served for 50 s: it falls
    now = 40.0 + ACHIEVED_WINDOW_S - 15.0  # 10 and 20 fell out of the window, 30 and 40 remain
    assert p.achieved_hz(now, 0.0) == pytest.approx(2 / (now - 30.0))
    # served on every tick of a 50 s period (0.02 Hz): 0.02 whatever the window's phase (a count of the
    # ticks in 120 s read 2 or 3 of them: 0.017 or 0.025 Hz)
    q = Product("render", "render_rate_hz", lambda: None)
    q.served.extend(5.0 + 50.0 * k + (0.7 if k % 2 else 0.0) for k in range(12))  # late by 0.7 s on odd ticks
    for now in (560.0, 575.0, 590.0, 605.0):
        assert q.achieved_hz(now, 0.0) == pytest.approx(0.02, rel=0.03)
    assert q.achieved_hz(5.0 + 50.0 * 11 + 200.0, 0.0) == 0.0  # none for 200 s


