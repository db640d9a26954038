"""Approximate time synchronisation: pairing, pose interpolation, drops, flush."""

import numpy as np
import pytest

from neural_mapping.camera import make_T, quat_to_R
from neural_mapping.ros.sync import ApproxSync

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
