"""The array form of query_field requests (neural_mapping/ros/fast_srv.py) against rclpy's own conversion."""

import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("neural_mapping_interfaces")

from geometry_msgs.msg import Point  # noqa: E402
from neural_mapping_interfaces.srv import QueryField  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from neural_mapping.ros import convert_out as co  # noqa: E402
from neural_mapping.ros.fast_srv import (QueryRequestArrays, QueryResponseArrays, array_client_types,  # noqa: E402
                                         array_request_type, array_response_type)


@pytest.fixture(scope="module")
def fast():
    t = array_request_type(QueryField.Request)
    assert t is not None, "the array conversion failed its own check"
    return t


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_same_points_as_the_generated_conversion(fast, n):
    pts = np.random.default_rng(n).uniform(-50, 50, (n, 3))
    if n >= 2:
        pts[1] = [np.nan, np.inf, -0.0]  # values pass through as they are; the node refuses them
    wire = serialize_message(QueryField.Request(points=[Point(x=x, y=y, z=z) for x, y, z in pts.tolist()],
                                                want_gradient=bool(n % 2)))
    got = deserialize_message(wire, fast)
    ref = deserialize_message(wire, QueryField.Request)
    assert isinstance(got, QueryRequestArrays) and got.error is None
    want = np.array([[p.x, p.y, p.z] for p in ref.points], np.float64).reshape(-1, 3)
    assert got.points_xyz.shape == (n, 3) and got.points_xyz.dtype == np.float64
    np.testing.assert_array_equal(got.points_xyz, want)
    assert got.want_gradient is ref.want_gradient and len(got) == n


def test_arrays_are_owned_and_not_leaked(fast):
    wire = serialize_message(QueryField.Request(points=[Point(x=1.0, y=2.0, z=3.0)] * 10))
    got = deserialize_message(wire, fast)
    assert got.points_xyz.flags.owndata  # a copy: the C message is freed once the conversion returns
    assert sys.getrefcount(got) == 2  # this name and getrefcount's argument: the converter returned one reference
    again = deserialize_message(wire, fast)  # the C message was freed; the first copy is intact
    np.testing.assert_array_equal(got.points_xyz, again.points_xyz)


def test_the_wire_type_is_unchanged(fast):
    meta, gen = type(fast), type(QueryField.Request)
    for name in ("_TYPE_SUPPORT", "_CREATE_ROS_MESSAGE", "_DESTROY_ROS_MESSAGE"):
        assert getattr(meta, name) is getattr(gen, name)
    assert meta._CONVERT_TO_PY is not gen._CONVERT_TO_PY


@pytest.fixture(scope="module")
def fast_response():
    t = array_response_type(QueryField.Response)
    assert t is not None, "the array conversion of responses failed its own check"
    return t


def _vectors(msg) -> np.ndarray:
    return np.array([[v.x, v.y, v.z] for v in msg.gradients], np.float64).reshape(-1, 3)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_response_gradients_as_sent_by_the_generated_conversion(fast_response, n):
    rng = np.random.default_rng(n)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    if n:
        g[0] = [np.nan, np.inf, -1.0]
    sdf = rng.normal(size=n).astype(np.float32)
    ref = QueryField.Response(success=True, message="ok \u00e9")  # the node's old path: one Vector3 per point
    ref.sdf, ref.occupancy, ref.gradients = co.float32_array(sdf), co.float32_array(sdf / 2), co.vectors_msgs(g)
    r = fast_response()
    assert isinstance(r, QueryField.Response) and r.gradients_xyz is None
    r.success, r.message, r.sdf, r.occupancy = True, "ok \u00e9", co.float32_array(sdf), co.float32_array(sdf / 2)
    r.gradients_xyz = g
    got, want = (deserialize_message(serialize_message(m), QueryField.Response) for m in (r, ref))
    np.testing.assert_array_equal(_vectors(got), _vectors(want))
    np.testing.assert_array_equal(np.array(got.sdf), np.array(want.sdf))
    np.testing.assert_array_equal(np.array(got.occupancy), np.array(want.occupancy))
    assert got.success and got.message == want.message and len(got.gradients) == n


def test_response_without_array_keeps_the_generated_behaviour(fast_response):
    r = fast_response()
    r.message = "no gradients"
    assert len(deserialize_message(serialize_message(r), QueryField.Response).gradients) == 0
    r.gradients = co.vectors_msgs(np.ones((3, 3), np.float32))  # set as messages: sent as they are
    np.testing.assert_array_equal(_vectors(deserialize_message(serialize_message(r), QueryField.Response)),
                                  np.ones((3, 3)))


@pytest.fixture(scope="module")
def client_types():
    t = array_client_types(QueryField)
    assert t is not None, "the client-side array conversion failed its check"
    return t


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_client_request_arrays_arrive_as_points(client_types, n):
    pts = np.random.default_rng(n).uniform(-50, 50, (n, 3))
    if n:
        pts[0] = [np.nan, -np.inf, 1e300]
    Request, _ = client_types
    got = deserialize_message(serialize_message(Request(pts, bool(n % 2))), QueryField.Request)
    np.testing.assert_array_equal(np.array([[p.x, p.y, p.z] for p in got.points]).reshape(-1, 3), pts)
    assert got.want_gradient is bool(n % 2)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_client_response_arrays_match_the_messages(client_types, n):
    rng = np.random.default_rng(n)
    g = rng.normal(size=(n, 3)).astype(np.float32)
    ref = QueryField.Response(success=bool(n % 2), message="x" * n)
    ref.sdf, ref.occupancy, ref.gradients = co.float32_array(g[:, 0]), co.float32_array(g[:, 1]), co.vectors_msgs(g)
    _, Response = client_types
    got = deserialize_message(serialize_message(ref), Response)
    assert isinstance(got, QueryResponseArrays) and got.success is bool(n % 2) and got.message == "x" * n
    assert got.sdf.dtype == np.float32 and got.gradients.shape == (n, 3)
    np.testing.assert_array_equal(got.sdf, g[:, 0])
    np.testing.assert_array_equal(got.occupancy, g[:, 1])
    np.testing.assert_array_equal(got.gradients, g.astype(np.float64))


@pytest.mark.parametrize("bad", [np.zeros((4, 2)), np.zeros(3), "abc", None, [[1.0, 2.0, "x"]]])
def test_client_request_of_a_bad_array_is_refused_clearly(client_types, bad):
    Request, _ = client_types
    with pytest.raises(ValueError, match=r"\(N, 3\) array of numbers"):
        Request(bad, True)
    ok = Request(np.ones((2, 3)), True)  # the class still works after a refusal
    assert len(deserialize_message(serialize_message(ok), QueryField.Request).points) == 2
