import numpy as np
import pytest
import torch

from neural_mapping.camera import intrinsics, make_T
from neural_mapping.config import KeyframeConfig
from neural_mapping.frame import Frame
from neural_mapping.keyframes import KeyframeBuffer, pose_distance, store_frame


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
    one = store_frame(big[0], 1, 0.1, 6.0, "cpu").nbytes  # 76800 px * (12 + 4 + 3) bytes + pose
    assert one == 76800 * 19 + 64
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
    assert torch.equal(c.latest.depth, b.latest.depth)
