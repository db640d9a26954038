"""Approximate time synchronisation: pairing, pose interpolation, drops, flush."""

import numpy as np
import pytest

from neural_mapping.camera import make_T, quat_to_R
from neural_mapping.frame import input_stride, resize_nearest
from neural_mapping.ros.sync import ApproxSync, SyncedSet, frame_from_synced

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def Tz(theta, t):
    return make_T(quat_to_R([0, 0, np.sin(theta / 2), np.cos(theta / 2)]), t)


def test_pairs_nearest_within_slop_and_interpolates_pose():
    s = ApproxSync(slop_s=0.010)
    out = []
    out += s.add_info(T0, "info")
    out += s.add_pose(T0, Tz(0.0, [0, 0, 0]))
    # colour at 0, 33, 66 ms; depth at 2, 40 (7 ms off: paired), 80 ms (14 ms off: dropped)
    for tc, td in [(0, 2), (33, 40), (66, 80)]:
        out += s.add_color(T0 + tc * MS, f"c{tc}")
        out += s.add_depth(T0 + td * MS, f"d{td}")
    assert out == []  # waiting for a pose at or after the stamps
    out += s.add_pose(T0 + 100 * MS, Tz(1.0, [1.0, 2.0, 0]))
    out += s.add_color(T0 + 100 * MS, "c100")
    out += s.flush()
    assert [(o.color, o.depth) for o in out] == [("c0", "d2"), ("c33", "d40")]
    assert out[0].stamp_ns == T0 + 2 * MS and out[0].color_stamp_ns == T0
    # pose at 40 ms of a 0..100 ms motion: 40 % of the way (hand computed)
    T40 = out[1].T_WC
    assert np.allclose(T40[:3, 3], [0.4, 0.8, 0])
    assert np.allclose(T40[:3, :3], quat_to_R([0, 0, np.sin(0.2), np.cos(0.2)]))
    assert s.stats.emitted == 2 and s.stats.dropped_depth == 1
    assert s.stats.dropped_color == 2  # c66 (no depth near) and c100 (never paired)
    assert out[0].info == "info"


def test_emits_as_soon_as_decidable_and_drops_without_pose():
    s = ApproxSync(slop_s=0.005, max_pose_gap_s=0.2)
    s.add_info(0, "i")
    s.add_pose(100 * MS, np.eye(4))
    # before the first pose: dropped
    assert s.add_depth(50 * MS, "d50") == [] and s.add_color(50 * MS, "c50") == []
    assert s.stats.dropped_no_pose == 1
    s.add_depth(150 * MS, "d150")
    assert s.add_color(150 * MS, "c150") == []  # no pose after 150 ms yet
    got = s.add_pose(200 * MS, make_T(np.eye(3), [1.0, 0, 0]))
    assert len(got) == 1 and got[0].depth == "d150" and np.allclose(got[0].T_WC[:3, 3], [0.5, 0, 0])
    # a pose gap wider than max_pose_gap_s: dropped
    s.add_depth(400 * MS, "d400")
    s.add_color(400 * MS, "c400")
    assert s.add_pose(600 * MS, np.eye(4)) == []
    assert s.stats.dropped_no_pose == 2 and s.pending == 0


def test_depth_first_or_colour_first_and_equal_stamps():
    for order in ("cd", "dc"):
        s = ApproxSync(slop_s=0.001)
        s.add_info(0, "i")
        s.add_pose(0, np.eye(4))
        s.add_pose(200 * MS, np.eye(4))
        out = []
        for k in range(5):
            t = k * 33 * MS
            for ch in order:
                out += s.add_color(t, k) if ch == "c" else s.add_depth(t, k)
        out += s.flush()
        assert [(o.color, o.depth) for o in out] == [(k, k) for k in range(5)]


def test_flush_uses_last_pose_within_slop_and_waits_for_info():
    s = ApproxSync(slop_s=0.02)
    s.add_pose(0, np.eye(4))
    s.add_pose(100 * MS, make_T(np.eye(3), [0, 0, 1.0]))
    s.add_depth(110 * MS, "d")
    assert s.add_color(110 * MS, "c") == []  # no camera_info yet
    assert len(s.add_info(0, "i")) == 0  # still waiting for a pose after 110 ms
    out = s.flush()
    assert len(out) == 1 and np.allclose(out[0].T_WC[:3, 3], [0, 0, 1.0])


def test_bounded_queue_drops_oldest():
    s = ApproxSync(slop_s=0.001, max_queue=3)
    for k in range(6):  # depth only, colour never comes
        s.add_depth(k * MS * 40, k)
    assert s.stats.dropped_overflow == 3 and s.pending == 3
    s.flush()
    assert s.pending == 0 and s.stats.dropped_depth == 3


def test_bad_settings():
    with pytest.raises(ValueError):
        ApproxSync(slop_s=-1)


# ----------------------------------------------------------------------------- synced set -> Frame


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


def test_input_stride():
    assert [input_stride(w, 320) for w in (160, 320, 321, 640, 641, 1280)] == [1, 1, 2, 2, 3, 4]
    assert input_stride(1280, None) == 1


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
