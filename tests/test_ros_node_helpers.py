"""Pure helpers of the node (no DDS): map-name checks, synced set -> Frame, product flattening."""

from pathlib import Path

import numpy as np
import pytest

from neural_mapping.ros.node import (_esdf_points, _in_exiting_thread, _occupied_centres, auto_input_max_width, check_map_name, frame_from_synced,
                                     input_stride, resize_nearest, resolve_in_dir)
from neural_mapping.ros.sync import SyncedSet


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/etc/passwd", "a\\b", ".hidden", "", "x..y", "bad name"])
def test_bad_map_names_are_refused(name, tmp_path):
    assert check_map_name(name) is not None
    with pytest.raises(ValueError):
        resolve_in_dir(str(tmp_path), name)


def test_good_map_name_resolves_inside_map_dir(tmp_path):
    assert check_map_name("office_2024-01.map") is None
    p = resolve_in_dir(str(tmp_path), "office.map")
    assert p == (tmp_path / "office.map").resolve() and p.parent == tmp_path.resolve()


def test_resize_nearest_picks_pixel_centres():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(img, 2, 2), [[5, 7], [13, 15]])
    up = resize_nearest(np.array([[1, 2]], np.uint8), 2, 4)
    np.testing.assert_array_equal(up, [[1, 1, 2, 2], [1, 1, 2, 2]])


def _set(rgb, depth, info_size):
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    return SyncedSet(stamp_ns=42, color=rgb, depth=depth, info=(K, info_size), T_WC=np.eye(4))


def test_frame_from_synced_resizes_colour_to_depth():
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = 200
    depth = np.full((24, 32), 1.5, np.float32)
    f = frame_from_synced(_set(rgb, depth, (32, 24)))
    assert f.rgb.shape == (24, 32, 3) and f.stamp_ns == 42
    assert f.rgb[0, 0, 0] == 0 and f.rgb[0, 31, 0] == 200
    np.testing.assert_allclose(f.K[0, 0], 50.0)  # depth's intrinsics are kept


def test_frame_from_synced_refuses_camera_info_of_another_size():
    with pytest.raises(ValueError, match="camera_info is for 64x48"):
        frame_from_synced(_set(np.zeros((24, 32, 3), np.uint8), np.ones((24, 32), np.float32), (64, 48)))


def test_occupied_centres_and_esdf_points():
    from neural_mapping.products import EsdfSlice, OccupancyGrid3D

    data = np.zeros((2, 2, 2), np.int8)
    data[1, 0, 1] = 100
    g = OccupancyGrid3D(data=data, origin=np.array([1.0, 2.0, 3.0]), resolution=0.5)
    np.testing.assert_allclose(_occupied_centres(g), [[1.75, 2.25, 3.75]])
    d = np.array([[0.5, np.nan], [np.nan, -0.25]], np.float32)
    es = EsdfSlice(distance=d, origin_xy=np.array([0.0, 0.0]), resolution=1.0, z=0.7)
    pts, dist = _esdf_points(es, 0.7)
    np.testing.assert_allclose(pts, [[0.5, 0.5, 0.7], [1.5, 1.5, 0.7]])
    np.testing.assert_allclose(dist, [0.5, -0.25])


def test_input_stride_and_auto_width():
    assert [input_stride(w, 320) for w in (160, 320, 321, 640, 641, 1280)] == [1, 1, 2, 2, 3, 4]
    assert input_stride(1280, None) == 1
    assert auto_input_max_width(0, "cpu") == 320 and auto_input_max_width(0, "cuda") is None
    assert auto_input_max_width(-1, "cpu") is None and auto_input_max_width(500, "cuda") == 500


def test_frame_from_synced_subsamples_wide_input_keeping_each_pixel_ray():
    from neural_mapping.camera import backproject_depth

    H, W = 24, 64
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, (H, W)).astype(np.float32)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    K = np.array([[40.0, 0, 31.5], [0, 41.0, 11.5], [0, 0, 1]])
    T = np.eye(4)
    T[:3, 3] = [0.5, -0.2, 1.0]
    s = SyncedSet(stamp_ns=7, color=rgb, depth=depth, info=(K, (W, H)), T_WC=T)
    f = frame_from_synced(s, max_width=30)  # stride 3
    assert f.depth_m.shape == (8, 22) and f.rgb.shape == (8, 22, 3)
    np.testing.assert_array_equal(f.depth_m, depth[::3, ::3])
    np.testing.assert_array_equal(f.rgb, rgb[::3, ::3])  # colour of the kept depth pixels
    np.testing.assert_allclose(f.K, [[40 / 3, 0, 31.5 / 3], [0, 41 / 3, 11.5 / 3], [0, 0, 1]])
    # each kept pixel back-projects to the same 3-D point as in the full image
    full = backproject_depth(depth, K, T, stride=3)
    sub = backproject_depth(f.depth_m, f.K, T, stride=1)
    np.testing.assert_allclose(sub, full, atol=1e-5)
    # colour of another size is sampled at the centres of the kept depth pixels
    big = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)  # (48, 128, 3): 2x2 blocks of the same colour
    f2 = frame_from_synced(SyncedSet(stamp_ns=7, color=big, depth=depth, info=(K, (W, H)), T_WC=T), max_width=30)
    np.testing.assert_array_equal(f2.rgb, rgb[::3, ::3])
    # within the width: untouched
    assert frame_from_synced(s, max_width=64).depth_m.shape == (H, W)


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
    np.testing.assert_allclose(np.sort(verts, axis=0), np.sort(v_full, axis=0), atol=1e-9)


def test_points_array_from_messages_and_duck_typed_points():
    from types import SimpleNamespace

    from geometry_msgs.msg import Point

    from neural_mapping.ros.node import _points_array

    msgs = [Point(x=1.0, y=2.0, z=3.0), Point(x=-1.5, y=0.25, z=9.0)]
    np.testing.assert_array_equal(_points_array(msgs), [[1.0, 2.0, 3.0], [-1.5, 0.25, 9.0]])
    np.testing.assert_array_equal(_points_array([SimpleNamespace(x=4, y=5, z=6)]), [[4.0, 5.0, 6.0]])
    assert _points_array([]).shape == (0, 3)



def test_in_exiting_thread_returns_raises_and_leaves_no_thread():
    import threading

    me = threading.get_ident()
    assert _in_exiting_thread(lambda: threading.get_ident()) != me  # computed elsewhere
    assert _in_exiting_thread(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        _in_exiting_thread(lambda: 1 / 0)
    assert not any(t.name == "neural_mapper_init" for t in threading.enumerate())
