import numpy as np
import pytest

from neural_mapping.camera import intrinsics, make_T, quat_to_R
from neural_mapping.frame import Frame, FrameError


def _frame(**kw):
    H, W = 4, 5
    args = dict(
        rgb=np.zeros((H, W, 3), np.uint8),
        depth_m=np.ones((H, W), np.float32),
        K=intrinsics(10, 10, 2, 2),
        T_WC=np.eye(4),
        stamp_ns=7,
    )
    args.update(kw)
    return Frame(**args)


def test_valid_frame():
    f = _frame()
    assert f.height == 4 and f.width == 5 and f.n_valid_depth == 20 and f.stamp_ns == 7


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(rgb=np.zeros((4, 5), np.uint8)), "rgb must be HxWx3"),
        (dict(rgb=np.zeros((4, 5, 3), np.float32)), "rgb must be uint8"),
        (dict(depth_m=np.ones((4, 5), np.float64)), "float32"),
        (dict(depth_m=np.ones((3, 5), np.float32)), "sizes differ"),
        (dict(K=intrinsics(-1, 10, 2, 2)), "positive focal"),
        (dict(K=np.eye(4)), "K must be 3x3"),
        (dict(T_WC=np.full((4, 4), np.nan)), "non-finite"),
        (dict(T_WC=make_T(np.diag([1.0, 1.0, 1.1]), [0, 0, 0])), "orthonormal"),
        (dict(T_WC=make_T(np.diag([1.0, 1.0, -1.0]), [0, 0, 0])), "orthonormal"),
        (dict(T_WC=np.eye(3)), "T_WC must be 4x4"),
    ],
)
def test_frame_errors(kw, msg):
    with pytest.raises(FrameError, match=msg):
        _frame(**kw)


def test_bad_depth_becomes_invalid_and_is_counted():
    d = np.ones((4, 5), np.float32)
    d[0, 0] = np.nan
    d[1, 1] = np.inf
    d[2, 2] = -3
    f = _frame(depth_m=d)
    assert f.n_invalid_fixed == 3
    assert f.depth_m[0, 0] == 0 and f.depth_m[1, 1] == 0 and f.depth_m[2, 2] == 0
    assert f.n_valid_depth == 17


@pytest.mark.parametrize("err", [0.0, 0.5e-3, 0.99e-3, 1.01e-3, 5e-3])
def test_rotation_tolerance_is_1e_3_on_r_transpose_r(err):
    R = quat_to_R([0.1, 0.2, 0.3, 0.9])
    T = make_T(np.sqrt(1.0 + err) * R, [1, 2, 3])  # (sR)^T (sR) - I = (s^2 - 1) I: max |R^T R - I| = err
    if err <= 1e-3:
        np.testing.assert_array_equal(_frame(T_WC=T).T_WC, T)  # accepted as given, not re-orthonormalised
    else:
        with pytest.raises(FrameError, match=rf"T_WC rotation is not orthonormal \(max \|R\^T R - I\| = {err:.2g}\)"):
            _frame(T_WC=T)


def test_rotation_tolerance_applies_to_shear_and_reflection():
    R = quat_to_R([0.1, 0.2, 0.3, 0.9])
    shear = np.eye(3)
    shear[0, 1] = 0.9e-3  # R^T R - I has off-diagonal entries 0.9e-3: accepted
    _frame(T_WC=make_T(R @ shear, [0, 0, 0]))
    shear[0, 1] = 1.2e-3
    with pytest.raises(FrameError, match="not orthonormal"):
        _frame(T_WC=make_T(R @ shear, [0, 0, 0]))
    with pytest.raises(FrameError, match="not orthonormal"):  # orthonormal, but a reflection (det -1)
        _frame(T_WC=make_T(-R, [0, 0, 0]))
