"""Property tests (hypothesis) of the core's input checks: Frame validation and the map-name
policy. Whatever is thrown at them, they either refuse with their own error or hand on something
that holds the invariants the rest of the code relies on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neural_mapping.frame import Frame, FrameError
from neural_mapping.mapfile import check_map_name, resolve_in_dir

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

floats_any = st.floats(allow_nan=True, allow_infinity=True, width=32)
side = st.integers(0, 6)


@st.composite
def frames_args(draw):
    H, W = draw(side), draw(side)
    # mostly consistent shapes and dtypes, sometimes not
    rgb_shape = draw(st.sampled_from([(H, W, 3), (H, W), (H, W, 4), (W, H, 3), (H + 1, W, 3)]))
    rgb_dtype = draw(st.sampled_from([np.uint8, np.uint8, np.float32, np.uint16]))
    rgb = draw(hnp.arrays(rgb_dtype, rgb_shape, elements=st.integers(0, 255)))
    d_shape = draw(st.sampled_from([(H, W), (H, W), (H, W, 1), (W + 1, H)]))
    d_dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.uint16]))
    elems = floats_any if d_dtype != np.uint16 else st.integers(0, 65535)
    depth = draw(hnp.arrays(d_dtype, d_shape, elements=elems))
    K = draw(st.one_of(
        st.builds(lambda f, g, c: np.array([[f, 0, c], [0, g, c], [0, 0, 1]]), st.floats(-10, 1e4), st.floats(-10, 1e4),
                  st.floats(-100, 100)),
        hnp.arrays(np.float64, st.sampled_from([(3, 3), (2, 3)]), elements=st.floats(allow_nan=True, allow_infinity=True))))
    q = draw(hnp.arrays(np.float64, 4, elements=st.floats(-1, 1)))
    t = draw(hnp.arrays(np.float64, 3, elements=st.floats(-1e6, 1e6)))
    T = np.eye(4)
    if np.linalg.norm(q) > 1e-3:
        from scipy.spatial.transform import Rotation

        T[:3, :3] = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
    T[:3, 3] = t
    mess = draw(st.sampled_from(["none", "none", "nan", "scale", "shape", "row"]))
    if mess == "nan":
        T[draw(st.integers(0, 2)), draw(st.integers(0, 3))] = np.nan
    elif mess == "scale":
        T[:3, :3] *= draw(st.floats(0.5, 2.0))
    elif mess == "shape":
        T = T[:3]
    elif mess == "row":
        T[3, 0] = 1.0
    return rgb, depth, K, T


@FAST
@given(frames_args())
def test_a_frame_is_either_refused_or_valid(args):
    rgb, depth, K, T = args
    n_bad = int((~np.isfinite(depth) | (depth < 0)).sum()) if depth.dtype.kind == "f" else 0
    try:
        f = Frame(rgb=rgb, depth_m=depth, K=K, T_WC=T)
    except FrameError as e:
        assert str(e)  # a message naming the problem
        return
    # accepted: the invariants the mapper, the keyframes and the coverage rely on
    assert f.rgb.dtype == np.uint8 and f.rgb.ndim == 3 and f.rgb.shape[2] == 3
    assert f.depth_m.dtype == np.float32 and f.depth_m.shape == f.rgb.shape[:2]
    assert np.isfinite(f.depth_m).all() and (f.depth_m >= 0).all()
    assert f.n_invalid_fixed == n_bad
    assert f.K.shape == (3, 3) and np.isfinite(f.K).all() and f.K[0, 0] > 0 and f.K[1, 1] > 0
    R = f.T_WC[:3, :3]
    assert f.T_WC.shape == (4, 4) and np.isfinite(f.T_WC).all()
    assert np.abs(R.T @ R - np.eye(3)).max() <= 1e-3 and np.linalg.det(R) > 0
    np.testing.assert_allclose(f.T_WC[3], [0, 0, 0, 1], atol=1e-6)
    # validation is idempotent and leaves the caller's depth array alone
    f.validate()
    assert f.n_invalid_fixed == n_bad


path_parts = st.lists(st.sampled_from(list("abcXYZ019_-. /\\~$*?:\x00\n") + ["..", "é", "\u202e", os.sep]),
                      max_size=12).map("".join)


@FAST
@given(st.one_of(path_parts, st.text(max_size=140),
                 st.builds(lambda a, b: a + b, st.sampled_from(["", "../", "/", "./", "~/", "a/../"]), path_parts)))
def test_a_map_name_never_leaves_map_dir(tmp_path_factory, name):
    root = tmp_path_factory.getbasetemp() / "maps"
    root.mkdir(exist_ok=True)
    why = check_map_name(name)
    try:
        p = resolve_in_dir(str(root), name)
    except ValueError as e:
        assert why is None or str(e) == why
        return
    assert why is None  # accepted by both
    assert p.parent == root.resolve() and p.name == name
    assert not name.startswith(".") and "/" not in name and "\\" not in name and ".." not in name
    assert 1 <= len(name) <= 128


@pytest.mark.parametrize("name", ["map", "a.map", "room_2024-01-01.map", "x" * 128])
def test_plain_names_resolve_to_a_file_in_map_dir(tmp_path, name):
    assert resolve_in_dir(str(tmp_path), name) == Path(tmp_path).resolve() / name
