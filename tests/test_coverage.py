"""Coverage: observed-free / observed-surface / unknown voxels from depth frames."""

import numpy as np
import pytest

from neural_mapping.camera import intrinsics, make_T
from neural_mapping.coverage import FREE, SURFACE, Coverage
from neural_mapping.frame import Frame

K = intrinsics(100.0, 100.0, 39.5, 29.5)  # 80x60 image, ~44 deg horizontal field of view


def wall_frame(depth: float = 2.0, T_WC=None, H: int = 60, W: int = 80) -> Frame:
    """A camera looking along +z at a fronto-parallel wall ``depth`` metres away."""
    d = np.full((H, W), depth, np.float32)
    return Frame(np.zeros((H, W, 3), np.uint8), d, K, np.eye(4) if T_WC is None else T_WC)


def test_free_surface_and_unknown_along_the_optical_axis():
    cov = Coverage(0.1)
    cov.update(wall_frame(2.0), max_depth_m=6.0, stride=2)
    # on the optical axis: free from the camera to just before the wall, surface at it, unknown behind
    z = np.array([0.05, 0.55, 1.05, 1.85, 2.05, 2.35, 3.0])
    pts = np.stack([np.full_like(z, 0.03), np.full_like(z, 0.03), z], 1)
    st = cov.state_at(pts)
    assert list(st[:4] & FREE) == [FREE] * 4
    assert st[4] & SURFACE
    assert list(st[5:]) == [0, 0]
    # the surface voxels as a mask on the observed mask's lattice
    surf, seen = cov.surface_mask(), cov.observed_mask()
    assert surf.mask.shape == seen.mask.shape and np.array_equal(surf.origin, seen.origin)
    assert list(surf.contains(pts)) == [False] * 4 + [True, False, False]
    assert not (surf.mask & ~seen.mask).any() and surf.mask.sum() < seen.mask.sum()
    # outside the field of view (x far to the side at z = 1) is unknown
    assert not cov.observed(np.array([[1.5, 0.0, 1.0], [0.0, -1.5, 1.0], [0.0, 0.0, -0.5]])).any()


def test_bounds_match_the_frustum():
    cov = Coverage(0.1)
    assert cov.bounds() is None
    cov.update(wall_frame(2.0), max_depth_m=6.0, stride=1)
    lo, hi = cov.bounds()
    # pixel centres u in 0..79, v in 0..59: the wall points span x = (u - 39.5) / 100 * 2 in
    # [-0.79, 0.79], y in [-0.59, 0.59], z = 2.0 (voxel 20); the camera is at the origin
    np.testing.assert_allclose(lo, [-0.8, -0.6, 0.0], atol=1e-9)
    np.testing.assert_allclose(hi, [0.8, 0.6, 2.1], atol=1e-9)


def test_depth_beyond_max_marks_free_space_only_and_invalid_marks_nothing():
    cov = Coverage(0.1)
    cov.update(wall_frame(5.0), max_depth_m=3.0, stride=2)
    st = cov.state_at(np.array([[0.03, 0.03, 2.5], [0.03, 0.03, 2.95], [0.03, 0.03, 3.5], [0.03, 0.03, 5.0]]))
    assert st[0] == FREE and st[1] == FREE and st[2] == 0 and st[3] == 0
    assert not cov.surface_mask().any()
    empty = Coverage(0.1)
    empty.update(wall_frame(0.0), max_depth_m=3.0)
    assert empty.bounds() is None and empty.n_observed == 0


def test_grows_to_negative_coordinates_and_keeps_old_observations():
    cov = Coverage(0.1)
    cov.update(wall_frame(2.0), max_depth_m=6.0)
    first = cov.observed(np.array([[0.03, 0.03, 1.0]]))
    # a second camera 5 m away looking along -x (camera z = world -x)
    R = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    cov.update(wall_frame(2.05, make_T(R, [-5.0, 0.0, 0.0])), max_depth_m=6.0)
    assert first.all() and cov.observed(np.array([[0.03, 0.03, 1.0]])).all()
    assert cov.observed(np.array([[-6.0, 0.03, 0.03]])).all()  # 1 m in front of camera 2
    assert cov.state_at(np.array([[-7.05, 0.03, 0.03]]))[0] & SURFACE  # its wall at x = -7.05
    lo, hi = cov.bounds()
    assert lo[0] <= -7.0 and hi[2] >= 2.0
    assert cov.n_updates == 2


def test_changed_since_reports_only_new_voxels():
    cov = Coverage(0.1)
    cov.update(wall_frame(2.0), max_depth_m=6.0)
    n = cov.n_updates
    R = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    cov.update(wall_frame(1.0, make_T(R, [-5.0, 0.0, 0.0])), max_depth_m=6.0)
    ch = cov.changed_since(n)  # per block of 8^3 voxels (0.8 m here)
    assert ch.voxel_m == pytest.approx(0.8)
    assert ch.contains(np.array([[-5.5, 0.03, 0.03]]))[0]
    assert not ch.contains(np.array([[0.03, 0.03, 1.0]]))[0]
    assert cov.changed_since(cov.n_updates).any() is False
    assert cov.changed_since(0).contains(np.array([[0.03, 0.03, 1.0], [-5.5, 0.03, 0.03]])).all()
    # a restored record counts everything observed as touched by its last update
    other = Coverage()
    other.load_state_dict(cov.state_dict())
    assert other.changed_since(cov.n_updates - 1).contains(np.array([[0.03, 0.03, 1.0]])).all()


def test_state_dict_round_trip_is_exact():
    cov = Coverage(0.05)
    cov.update(wall_frame(1.5), max_depth_m=6.0)
    d = cov.state_dict()
    other = Coverage()
    other.load_state_dict(d)
    pts = np.random.default_rng(0).uniform(-2, 3, size=(50_000, 3))
    np.testing.assert_array_equal(cov.state_at(pts), other.state_at(pts))
    assert other.voxel_m == 0.05
    np.testing.assert_allclose(other.bounds()[0], cov.bounds()[0])
    np.testing.assert_allclose(other.bounds()[1], cov.bounds()[1])


def test_observed_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        Coverage().observed(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        Coverage(0.0)


def test_two_far_apart_regions_allocate_two_small_block_sets():
    """Block-sparse storage: a second frame 100 km away costs its own few blocks, not the box."""
    from neural_mapping.coverage import BLOCK

    cov = Coverage(0.05)
    cov.update(wall_frame(2.0), max_depth_m=6.0)
    one = cov.n_blocks
    far = make_T(np.eye(3), [100_000.0, 0.0, 0.0])
    cov.update(wall_frame(2.0, far), max_depth_m=6.0)
    assert cov.n_blocks == 2 * one  # the same view, shifted by a whole number of blocks
    assert cov.allocated_cells == cov.n_blocks * BLOCK ** 3 < 1_000_000  # a dense box would be 2e6 x ...
    keys = cov.block_indices()
    near, distant = keys[keys[:, 0] < 1000], keys[keys[:, 0] >= 1000]
    assert len(near) == len(distant) == one
    assert list(np.unique(distant[:, 0])) == [124_999, 125_000]  # x in [-0.8, 0.8] m around 100 km
    # both regions answer, the gap between them is unknown
    pts = np.array([[0.03, 0.03, 1.0], [100_000.03, 0.03, 1.0], [50_000.0, 0.0, 1.0]])
    assert list(cov.observed(pts)) == [True, True, False]
    # the far region holds the near one, shifted (up to end points on voxel faces, where the
    # float rounding at 100 km differs)
    c = (np.stack(np.meshgrid(*[np.arange(-20, 20)] * 2, np.arange(-2, 50), indexing="ij"), -1).reshape(-1, 3) + 0.5) * 0.05
    near_st = cov.state_at(c)
    assert (near_st & SURFACE).any() and (near_st == FREE).any()
    assert np.mean(cov.state_at(c + [100_000.0, 0.0, 0.0]) != near_st) < 0.01
    lo, hi = cov.bounds()
    assert lo[0] == pytest.approx(-0.8) and hi[0] == pytest.approx(100_000.8)


def test_non_finite_points_are_unknown():
    cov = Coverage(0.1)
    cov.update(wall_frame(2.0), max_depth_m=6.0)
    st = cov.state_at(np.array([[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [0.03, 0.03, 1.0], [1e30, 0, 0]]))
    assert list(st) == [0, 0, FREE, 0]


def test_a_dense_record_of_an_old_map_file_is_migrated_into_blocks():
    """Maps saved before the block-sparse record stored a dense volume with an origin."""
    import torch

    cov = Coverage(0.1)
    cov.update(wall_frame(2.0), max_depth_m=6.0)
    cov.update(wall_frame(1.0, make_T(np.eye(3), [-3.0, 0.5, 0.0])), max_depth_m=6.0)
    m = cov.observed_mask()
    surf = cov.surface_mask().mask
    dense = (m.mask.astype(np.uint8) * FREE) | (surf.astype(np.uint8) * SURFACE)
    dense[surf] = SURFACE  # surface voxels in the old layout can be surface only
    old = {"voxel_m": 0.1, "origin": torch.from_numpy(m.origin.copy() - 16),
           "state": torch.from_numpy(np.pad(dense, 16)), "n_updates": 7}
    other = Coverage()
    other.load_state_dict(old)
    pts = np.random.default_rng(1).uniform(-5, 4, size=(100_000, 3))
    np.testing.assert_array_equal(other.observed(pts), cov.observed(pts))
    np.testing.assert_array_equal(other.state_at(pts) & SURFACE, cov.state_at(pts) & SURFACE)
    assert other.n_updates == 7 and other.n_blocks == cov.n_blocks
    assert other.changed_since(6).contains(np.array([[0.03, 0.03, 1.0]])).all()
    assert not other.changed_since(7).any()
    bad = dict(old, state=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="3-D"):
        Coverage().load_state_dict(bad)


def test_frames_too_large_for_the_scratch_volume_give_the_same_record(monkeypatch):
    """Frames whose box exceeds the dense scratch volume mark each sample's block directly."""
    import neural_mapping.coverage as C

    R = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    frames = [wall_frame(2.0), wall_frame(1.5, make_T(R, [-3.0, 0.2, 0.1]))]
    a = Coverage(0.05)
    for f in frames:
        a.update(f, max_depth_m=6.0)
    monkeypatch.setattr(C, "_SCRATCH_MAX", 0)
    b = Coverage(0.05)
    for f in frames:
        b.update(f, max_depth_m=6.0)
    pts = np.random.default_rng(4).uniform(-6, 3, size=(200_000, 3))
    np.testing.assert_array_equal(a.state_at(pts), b.state_at(pts))
    assert a.n_blocks == b.n_blocks and a.n_observed == b.n_observed > 0
    for n in (0, 1):
        ca, cb = a.changed_since(n), b.changed_since(n)
        np.testing.assert_array_equal(ca.origin, cb.origin)
        np.testing.assert_array_equal(ca.mask, cb.mask)
