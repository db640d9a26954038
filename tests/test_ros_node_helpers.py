"""Pure helpers of the node (no DDS): map-name checks, synced set -> Frame, product flattening."""

from pathlib import Path

import numpy as np
import pytest

from neural_mapping.ros.node import _esdf_points, _occupied_centres, check_map_name, frame_from_synced, resize_nearest, resolve_in_dir
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
