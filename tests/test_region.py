"""The map's region of interest and pose-plausibility checks (neural_mapping/region.py) through
Mapper.add_frame: an absurd pose is rejected and counted, and the map's memory stays small."""

import numpy as np
import pytest

from neural_mapping.camera import intrinsics, make_T
from neural_mapping.config import ConfigError, MapperConfig, apply_overrides
from neural_mapping.frame import Frame
from neural_mapping.mapper import Mapper
from neural_mapping.region import JUMP_DEG, JUMP_M, OUTSIDE, RELOCALISE_AFTER

K = intrinsics(100.0, 100.0, 39.5, 29.5)  # 80x60
SMALL = {"device": "cpu", "encoding.hash_log2_table": 10, "encoding.hash_levels": 4}


def cfg(**kw) -> MapperConfig:
    return apply_overrides(MapperConfig(), {**SMALL, **kw})


def frame(x=0.0, depth=2.0, stamp_s=0.0, yaw_deg=0.0) -> Frame:
    """A camera at (x, 0, 0) looking along +z (turned by yaw about y) at a wall ``depth`` m away."""
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return Frame(np.zeros((60, 80, 3), np.uint8), np.full((60, 80), depth, np.float32), K,
                 make_T(R, [x, 0.0, 0.0]), stamp_ns=int(stamp_s * 1e9))


def test_a_frame_100_km_away_is_rejected_counted_and_allocates_nothing():
    m = Mapper(cfg())
    assert m.add_frame(frame(0.0))
    blocks, cells = m.coverage.n_blocks, m.coverage.allocated_cells
    lo, hi = m.bounds()
    assert not m.add_frame(frame(100_000.0, stamp_s=10.0))  # far in time too: the region refuses it
    assert m.stats.reject_reasons == {OUTSIDE: 1} and m.stats.frames_rejected == 1
    assert m.coverage.n_blocks == blocks and m.coverage.allocated_cells == cells < 200_000
    np.testing.assert_array_equal(m.bounds()[0], lo)
    np.testing.assert_array_equal(m.bounds()[1], hi)
    assert m.add_frame(frame(0.05, stamp_s=10.03))  # the map goes on


def test_pose_jumps_between_close_frames_are_rejected_unless_far_apart_in_time():
    m = Mapper(cfg(**{"map.max_pose_jump_m": 1.0, "map.max_rotation_jump_deg": 90.0}))
    assert m.add_frame(frame(0.0, stamp_s=1.0))
    assert not m.add_frame(frame(3.0, stamp_s=1.033))  # 3 m in 33 ms
    assert not m.add_frame(frame(0.0, stamp_s=1.066, yaw_deg=150.0))  # turned 150 deg in 66 ms
    assert m.stats.reject_reasons == {JUMP_M: 1, JUMP_DEG: 1}
    assert m.add_frame(frame(0.5, stamp_s=1.1))  # within the limit of the last accepted frame
    assert m.add_frame(frame(3.0, stamp_s=3.0))  # 2.5 m, 1.9 s later: may have driven there
    # without stamps (offline sources) frames are consecutive in index order
    n = Mapper(cfg(**{"map.max_pose_jump_m": 1.0}))
    assert n.add_frame(frame(0.0)) and not n.add_frame(frame(3.0)) and n.add_frame(frame(0.9))
    assert n.add_frame(frame(0.9, yaw_deg=179.0))  # turns are not checked by default


def test_a_jump_that_persists_is_a_relocalisation():
    m = Mapper(cfg(**{"map.max_pose_jump_m": 1.0}))
    assert m.add_frame(frame(0.0))
    got = [m.add_frame(frame(4.0 + 0.01 * i)) for i in range(RELOCALISE_AFTER + 1)]
    assert got == [False] * (RELOCALISE_AFTER - 1) + [True, True]
    assert m.stats.reject_reasons == {JUMP_M: RELOCALISE_AFTER - 1}
    # a single glitch between good frames never builds a streak
    g = Mapper(cfg(**{"map.max_pose_jump_m": 1.0}))
    assert g.add_frame(frame(0.0))
    ok = [g.add_frame(frame(0.0 if i % 2 else 9.0)) for i in range(12)]
    assert ok == [i % 2 == 1 for i in range(12)] and g.stats.reject_reasons == {JUMP_M: 6}


def test_depth_points_beyond_the_region_are_ignored():
    m = Mapper(cfg(**{"map.max_extent_m": 1.0, "render.max_depth_m": 10.0}))
    f = frame(0.0, depth=0.8)
    f.depth_m[:, 40:] = 3.0  # the right half sees a wall 3 m away, beyond the 1 m region
    assert m.add_frame(f) and m.stats.frames_rejected == 0
    lo, hi = m.coverage.bounds()
    assert hi[2] == pytest.approx(0.85) and hi[0] <= 0.05 + 1e-9  # only the left half, nothing beyond 1 m
    assert m.bounds()[1][2] == pytest.approx(0.8 + m.cfg.field.margin_m)
    assert f.depth_m[0, 79] == 3.0  # the caller's frame is left as it was
    # a frame whose every point lies beyond keeps too few pixels and is rejected for that
    far = Mapper(cfg(**{"map.max_extent_m": 1.0, "render.max_depth_m": 10.0}))
    far.region.center = np.zeros(3)
    assert not far.add_frame(frame(0.0, depth=5.0))
    assert list(far.stats.reject_reasons)[0].startswith("only 0 depth pixels")


def test_a_loaded_map_takes_the_centre_of_its_bounds():
    m = Mapper(cfg())
    assert m.add_frame(frame(30.0))
    other = Mapper.from_state_dict(m.state_dict())
    assert not other.add_frame(frame(-30.0))  # 60 m from the loaded map's region
    assert other.stats.reject_reasons == {OUTSIDE: 1}
    assert other.add_frame(frame(31.0))


@pytest.mark.parametrize("key,value", [("map.max_extent_m", 0.0), ("map.max_rotation_jump_deg", 200.0),
                                       ("map.max_pose_jump_m", -1.0)])
def test_limits_are_validated(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg(**{key: value})
