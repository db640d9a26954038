import numpy as np
import pytest
import torch

from neural_mapping.camera import intrinsics, make_T
from neural_mapping.config import KeyframeConfig
from neural_mapping.frame import Frame
from neural_mapping.keyframes import KeyframeBuffer, pose_distance, silhouette_distance_m, store_frame


def _frame(x=0.0, yaw_deg=0.0, H=8, W=10, depth=2.0, holes=0):
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    d = np.full((H, W), depth, np.float32)
    d.reshape(-1)[:holes] = 0
    rgb = np.full((H, W, 3), 200, np.uint8)
    return Frame(rgb, d, intrinsics(10, 10, (W - 1) / 2, (H - 1) / 2), make_T(R, [x, 0, 0]))


def _buf(**kw):
    return KeyframeBuffer(KeyframeConfig(**kw), "cpu", min_depth=0.1, max_depth=6.0)


def test_pose_distance():
    dt, ang = pose_distance(_frame(0, 0).T_WC, _frame(0.3, 30).T_WC)
    assert dt == pytest.approx(0.3) and ang == pytest.approx(30.0)


def test_selection_by_translation_and_rotation():
    b = _buf(min_translation_m=0.1, min_rotation_deg=10.0)
    assert b.add(_frame(0.0)) == (True, True)
    assert b.add(_frame(0.05)) == (True, False)  # too close: latest only
    assert b.add(_frame(0.12)) == (True, True)  # 0.12 from the last keyframe
    assert b.add(_frame(0.12, yaw_deg=12)) == (True, True)  # rotation alone
    assert len(b) == 3
    assert b.latest is b.keyframes[-1]


def test_store_frame_keeps_valid_downsampled_pixels():
    sf = store_frame(_frame(holes=5), downsample=2, min_depth=0.1, max_depth=6.0, device="cpu")
    # 8x10 -> 4x5 grid at even rows/cols; holes were the first 5 pixels of row 0 -> cols 0, 2, 4 removed
    assert sf.depth.shape == (20 - 3,)
    assert torch.allclose(sf.dirs_C[:, 2], torch.ones(17))
    assert store_frame(_frame(depth=0.05), 1, 0.1, 6.0, "cpu") is None


def test_buffer_bounded_by_count_and_memory():
    b = _buf(min_translation_m=0.0, max_keyframes=4)
    for i in range(10):
        b.add(_frame(i * 1.0))
    assert len(b) == 4 and b.dropped == 6
    assert b.keyframes[-1].T_WC_np[0, 3] == 9.0  # the newest is always kept
    big = [_frame(i * 1.0, H=240, W=320) for i in range(6)]
    one = store_frame(big[0], 1, 0.1, 6.0, "cpu").nbytes  # 76800 px * (12 + 4 + 3 + 2) bytes + pose
    assert one == 76800 * 21 + 64
    m = _buf(min_translation_m=0.0, max_keyframes=100, max_mb=2.5 * one / 1e6)
    for f in big:
        m.add(f)
    assert len(m) == 2 and m.nbytes <= 2.5 * one


def test_low_loss_keyframes_dropped_first():
    b = _buf(min_translation_m=0.0, max_keyframes=3)
    for i in range(3):
        b.add(_frame(float(i)))
    for k, loss in zip(b.keyframes, [0.9, 0.1, 0.5]):
        k.loss = loss
    b.add(_frame(3.0))
    assert [k.T_WC_np[0, 3] for k in b.keyframes] == [0.0, 2.0, 3.0]


def test_sampling_fractions_rays_and_loss_weighting():
    b = _buf(min_translation_m=0.0)
    for i in range(3):
        b.add(_frame(float(i)))
    b.add(_frame(10.0, depth=3.0))  # latest (also a keyframe)
    for k, loss in zip(b.keyframes, [1.0, 0.0, 0.0, 0.0]):
        k.loss = loss
    torch.manual_seed(0)
    batch = b.sample(1000, latest_fraction=0.25)
    assert len(batch) == 1000
    src = batch.source
    assert int((src == -1).sum()) == 250
    assert (batch.depth[src == -1] == 3.0).all()
    assert (src[src >= 0] == 0).all()  # all other weight on keyframe 0
    # ray geometry: origin is the keyframe's camera centre, dir z-component is its optical axis
    assert torch.allclose(batch.origins_W[src == 0], torch.tensor([0.0, 0.0, 0.0]).expand(750, 3))
    assert torch.allclose(batch.origins_W[src == -1][:, 0], torch.full((250,), 10.0))
    assert ((batch.rgb - 200 / 255).abs() < 1e-6).all()


def test_update_losses_moves_towards_ray_loss():
    b = _buf(min_translation_m=0.0)
    b.add(_frame(0.0))
    b.add(_frame(1.0))
    for k in b.keyframes:
        k.loss = 1.0
    b.update_losses(torch.tensor([0, 0, 1, -1]), torch.tensor([0.0, 0.2, 3.0, 100.0]), momentum=0.5)
    assert b.keyframes[0].loss == pytest.approx(0.5 * 1.0 + 0.5 * 0.1)
    assert b.keyframes[1].loss == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)


def test_state_dict_round_trip():
    b = _buf(min_translation_m=0.0)
    b.add(_frame(0.0))
    b.add(_frame(1.0))
    c = _buf()
    c.load_state_dict(b.state_dict())
    assert len(c) == 2 and torch.equal(c.keyframes[1].dirs_C, b.keyframes[1].dirs_C)
    assert torch.equal(c.latest.depth, b.latest.depth) and torch.equal(c.latest.edge_m, b.latest.edge_m)
    old = b.state_dict()  # a buffer saved before silhouette distances existed: none known
    for k in old["keyframes"] + [old["latest"]]:
        del k["edge_m"]
    c.load_state_dict(old)
    assert torch.isinf(c.keyframes[0].edge_m).all() and c.sample(8, 0.5).edge_m.shape == (8,)


def test_silhouette_distance_by_hand():
    # a 3x3 box at 1 m in front of a wall at 3 m, one pixel without depth at the top-left corner
    d = np.full((7, 8), 3.0, np.float32)
    d[2:5, 2:5] = 1.0
    d[0, 0] = 0.0
    valid = d > 0
    e = silhouette_distance_m(d, valid, f_px=100.0, jump_m=0.1)
    # the box's outer ring is silhouette (0.5 px at 1 m), its centre 1 px further in
    assert e[2, 2] == pytest.approx(0.005) and e[2, 3] == pytest.approx(0.005)
    assert e[3, 3] == pytest.approx(0.015)
    # wall pixels: not silhouettes themselves (the box is nearer), except the neighbours of the hole
    assert e[0, 1] == pytest.approx(0.5 * 3 / 100) and e[1, 0] == pytest.approx(0.5 * 3 / 100)
    assert e[6, 7] == pytest.approx((3 + 0.5) * 3 / 100)  # 3 px (chessboard) from the box corner (4, 4)
    assert e[6, 0] > e[5, 1] > 0  # the image border is no silhouette
    assert np.isinf(silhouette_distance_m(d, valid, 100.0, jump_m=0.0)).all()  # off
    flat = np.full((5, 5), 2.0, np.float32)
    assert np.isinf(silhouette_distance_m(flat, flat > 0, 100.0, 0.1)).all()  # no silhouette anywhere


def test_sampled_rays_carry_their_silhouette_distance():
    d = np.full((8, 10), 3.0, np.float32)
    d[:, :5] = 1.0  # left half near, right half far: column 4 is the silhouette
    f = Frame(np.full((8, 10, 3), 200, np.uint8), d, intrinsics(10, 10, 4.5, 3.5), make_T(np.eye(3), [0, 0, 0]))
    b = KeyframeBuffer(KeyframeConfig(), "cpu", min_depth=0.1, max_depth=6.0, edge_jump_m=0.1)
    b.add(f)
    r = b.sample(500, latest_fraction=0.5)
    u = torch.round(r.dirs_W[:, 0] * 10 + 4.5).long()  # pixel column from the z-scaled direction
    want = torch.where(u <= 4, (4 - u + 0.5) * 1.0 / 10, (u - 4 + 0.5) * 3.0 / 10)
    assert torch.allclose(r.edge_m, want, atol=1e-3)
    plain = KeyframeBuffer(KeyframeConfig(), "cpu", min_depth=0.1, max_depth=6.0)  # default: no silhouettes
    plain.add(f)
    assert torch.isinf(plain.sample(10, 0.5).edge_m).all()


def test_every_frame_feeds_the_bounded_reservoir_and_batches_draw_from_it():
    from neural_mapping import keyframes as kfm

    b = KeyframeBuffer(KeyframeConfig(min_translation_m=1.0, min_rotation_deg=90.0), "cpu", 0.1, 6.0)
    assert b.add(_frame(0.0, H=60, W=80)) == (True, True)
    for i in range(1, 6):  # close poses: not keyframes, each gives rays to the reservoir
        assert b.add(_frame(0.01 * i, H=60, W=80)) == (True, False)
        assert b.latest.depth.shape[0] <= kfm.LATEST_MAX_PIXELS
    assert len(b.reservoir) == 5 * kfm.RESERVOIR_RAYS_PER_FRAME and len(b.keyframes) == 1
    batch = b.sample(1000, latest_fraction=0.2, generator=torch.Generator().manual_seed(0))
    n_res = int((batch.source == -2).sum())
    assert n_res == round(800 * kfm.RESERVOIR_FRACTION) and len(batch) == 1000
    assert torch.isfinite(batch.depth).all() and (batch.depth > 0).all()
    small = kfm.RayReservoir(600, "cpu")
    for _ in range(3):
        small.add(b.latest, 512)
    assert len(small) == 600 and small.seen == 1536  # bounded; a full reservoir overwrites slots
    c = KeyframeBuffer(b.cfg, "cpu", 0.1, 6.0)
    c.load_state_dict(b.state_dict())
    assert len(c.reservoir) == len(b.reservoir) and torch.equal(c.reservoir.depth, b.reservoir.depth)
