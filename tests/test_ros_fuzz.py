"""Property tests (hypothesis) of the message <-> array converters and of query request handling:
whatever the message holds, a conversion returns the array it encodes or raises ValueError, and
a query_field request is answered or refused, never crashes the handler."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from neural_mapping.ros import convert, convert_out as co

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))


@FAST
@given(hw=sizes, data=st.data(), enc=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]),
       pad=st.integers(0, 5))
def test_colour_images_round_trip_or_refuse(hw, data, enc, pad):
    H, W = hw
    rgb = data.draw(hnp.arrays(np.uint8, (H, W, 3)))
    msg = co.rgb_to_image(rgb, "cam", 5)
    assert np.array_equal(convert.image_to_rgb(msg), rgb)
    # re-encode as enc with row padding: the same colours come back (mono: the first channel)
    ch = {"rgb8": [0, 1, 2], "bgr8": [2, 1, 0], "rgba8": [0, 1, 2, 1], "bgra8": [2, 1, 0, 1], "mono8": [0]}[enc]
    raw = rgb[..., ch]
    step = W * len(ch) + pad
    buf = np.zeros((H, step), np.uint8)
    buf[:, :W * len(ch)] = raw.reshape(H, -1)
    msg2 = SimpleNamespace(encoding=enc, height=H, width=W, step=step, is_bigendian=0, data=buf.tobytes())
    want = np.repeat(rgb[..., :1], 3, axis=2) if enc == "mono8" else rgb
    assert np.array_equal(convert.image_to_rgb(msg2), want)


@FAST
@given(hw=sizes, cut=st.integers(-20, 20), step_delta=st.integers(-4, 0), h=st.integers(-2, 3), w=st.integers(-2, 3),
       enc=st.text(max_size=6) | st.sampled_from(["rgb8", "16UC1", "32FC1", "yuv422", "8UC3", "mono16"]))
def test_any_malformed_image_is_a_value_error(hw, cut, step_delta, h, w, enc):
    H, W = hw
    msg = co.rgb_to_image(np.zeros((H, W, 3), np.uint8), "cam")
    msg.data = bytes(msg.data)[:max(0, len(msg.data) + cut)] if cut < 0 else bytes(msg.data) + b"\0" * cut
    msg2 = SimpleNamespace(encoding=enc, height=h, width=w, step=msg.step + step_delta, is_bigendian=0, data=msg.data)
    for m in (msg, msg2):
        for fn in (convert.image_to_rgb, convert.image_to_depth_m):
            try:
                out = fn(m)
            except ValueError:
                continue
            assert out.shape[:2] == (int(m.height), int(m.width))  # accepted only when consistent


@FAST
@given(data=st.data(), hw=sizes, big=st.booleans())
def test_depth_16uc1_and_32fc1_give_metres_and_zero_for_invalid(data, hw, big):
    H, W = hw
    mm = data.draw(hnp.arrays(np.uint16, (H, W)))
    dt = np.dtype(">u2" if big else "<u2")
    msg = SimpleNamespace(encoding="16UC1", height=H, width=W, step=2 * W, is_bigendian=int(big),
                          data=mm.astype(dt).tobytes())
    np.testing.assert_allclose(convert.image_to_depth_m(msg), mm.astype(np.float32) * np.float32(0.001), rtol=1e-6)
    m = data.draw(hnp.arrays(np.float32, (H, W), elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
    msg = SimpleNamespace(encoding="32FC1", height=H, width=W, step=4 * W, is_bigendian=0, data=m.tobytes())
    d = convert.image_to_depth_m(msg)
    ok = np.isfinite(m) & (m >= 0)
    assert np.array_equal(d[ok], m[ok]) and np.all(d[~ok] == 0)


@FAST
@given(k=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=9, max_size=9),
       hw=sizes)
def test_camera_info_k_is_accepted_only_finite_with_positive_focal_lengths(k, hw):
    K = np.array(k).reshape(3, 3)
    msg = co.camera_info_msg(np.nan_to_num(K), hw[0], hw[1], "cam") if np.all(np.isfinite(K)) else \
        SimpleNamespace(k=list(k), height=hw[0], width=hw[1])
    try:
        out = convert.camera_info_to_K(msg)
    except ValueError:
        assert not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0
        return
    assert np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0
    np.testing.assert_array_equal(out, K)


quats = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4)


@FAST
@given(q=quats, t=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=3, max_size=3),
       scale=st.sampled_from([1.0, 1.0, 0.0, 1.5, float("nan")]))
def test_poses_round_trip_and_bad_quaternions_are_refused(q, t, scale):
    from geometry_msgs.msg import PoseStamped

    q = np.array(q)
    n = np.linalg.norm(q)
    if n < 1e-3:
        return
    qu = q / n * scale
    msg = PoseStamped()
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = t
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in qu)
    try:
        T = convert.pose_msg_to_T(msg)
    except ValueError:
        assert scale != 1.0
        return
    assert scale == 1.0
    R = T[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)  # orthonormal
    np.testing.assert_allclose(T[:3, 3], t)
    np.testing.assert_allclose(co.pose_to_T(co.T_to_pose(T)), T, atol=1e-9)


# ----------------------------------------------------------------------------- query_field handling

class _Mapper:
    def query(self, pts, want_gradient=False):
        n = len(pts)
        return SimpleNamespace(sdf=np.full(n, 0.5, np.float32), occupancy=np.zeros(n, np.float32),
                               gradient=np.zeros((n, 3), np.float32) if want_gradient else None)


def _handler(max_points: int, has_map: bool = True):
    from neural_mapping.ros.services import Services

    s = Services.__new__(Services)
    s.node = SimpleNamespace(ncfg=SimpleNamespace(max_query_points=max_points), has_map=lambda: has_map)
    s.core = SimpleNamespace(run=lambda fn: fn(_Mapper()))
    return s


@FAST
@given(pts=hnp.arrays(np.float64, st.tuples(st.integers(0, 40), st.just(3)),
                      elements=st.floats(allow_nan=True, allow_infinity=True, width=64)),
       max_points=st.integers(1, 50), grad=st.booleans(), has_map=st.booleans())
def test_query_requests_are_answered_or_refused_never_crash(pts, max_points, grad, has_map):
    from geometry_msgs.msg import Point
    from neural_mapping_interfaces.srv import QueryField

    req = QueryField.Request(points=[Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts],
                             want_gradient=grad)
    resp = _handler(max_points, has_map).query_field(req, QueryField.Response())
    n = len(pts)
    ok = 0 < n <= max_points and has_map and bool(np.all(np.isfinite(pts)))
    assert resp.success == ok, resp.message
    if ok:
        assert len(resp.sdf) == n and len(resp.occupancy) == n and len(resp.gradients) == (n if grad else 0)
    else:
        assert resp.message and len(resp.sdf) == 0


def test_ten_million_points_are_refused_before_conversion():
    from neural_mapping_interfaces.srv import QueryField

    class Huge(list):  # a request claiming 10 M points: refused on its length alone
        def __len__(self):
            return 10_000_000

        def __iter__(self):
            raise AssertionError("the points were read")

    req = SimpleNamespace(points=Huge(), want_gradient=False)
    resp = _handler(2_000_000).query_field(req, QueryField.Response())
    assert not resp.success and "10000000 points is more than max_query_points (2000000)" in resp.message


def test_zero_points_are_refused():
    from neural_mapping_interfaces.srv import QueryField

    resp = _handler(10).query_field(QueryField.Request(), QueryField.Response())
    assert not resp.success and resp.message == "no points to query"
