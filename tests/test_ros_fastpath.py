"""The rosidl fast paths (neural_mapping/ros/fastpath.py) against rclpy's own conversion, and
their guard: a message whose definition differs from the mirrored one takes rclpy's path."""

import logging
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("neural_mapping_interfaces")

from geometry_msgs.msg import Point  # noqa: E402
from neural_mapping_interfaces.srv import QueryField  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from neural_mapping.ros import convert_out as co, fastpath as fp  # noqa: E402
from neural_mapping.ros.fastpath import (QueryRequestArrays, QueryResponseArrays, array_client_types,  # noqa: E402
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


# ----------------------------------------------------------------------------- slots and the Marker's CDR bytes


def test_points_array_of_messages_and_of_duck_typed_points(caplog):
    from types import SimpleNamespace

    msgs = [Point(x=1.0, y=2.0, z=3.0), Point(x=-1.5, y=0.25, z=9.0)]
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        np.testing.assert_array_equal(fp.points_array(msgs), [[1.0, 2.0, 3.0], [-1.5, 0.25, 9.0]])
        np.testing.assert_array_equal(fp.points_array([SimpleNamespace(x=4, y=5, z=6)]), [[4.0, 5.0, 6.0]])
    assert fp.points_array([]).shape == (0, 3)
    assert fp.XYZ_SLOTS.refusal(Point) is None and not caplog.records  # not a message: no warning either


def test_slot_writes_give_the_constructors_messages():
    from geometry_msgs.msg import Vector3
    from std_msgs.msg import ColorRGBA

    rows = np.array([[0.5, -1.0, 2.25], [1e-9, 3.0, -0.0]])
    assert fp.xyz_msgs(rows) == [Point(x=x, y=y, z=z) for x, y, z in rows.tolist()]
    assert fp.xyz_msgs(rows, Vector3) == [Vector3(x=x, y=y, z=z) for x, y, z in rows.tolist()]
    got = fp.rgba_msgs(np.clip(rows, 0, 1))
    assert got == [ColorRGBA(r=r, g=g, b=b, a=1.0) for r, g, b in np.clip(rows, 0, 1).astype(np.float32).tolist()]


def _mesh(n_sub: int, colored: bool):
    o3d = pytest.importorskip("open3d")
    mesh = o3d.geometry.TriangleMesh.create_sphere(1.0, 3 + n_sub)
    if colored:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.random.default_rng(n_sub).random((len(mesh.vertices), 3)))
    return mesh


@pytest.mark.parametrize("n_sub, colored", [(0, True), (1, False), (6, True)])
def test_marker_cdr_bytes_deserialize_to_the_same_marker(n_sub, colored):
    from visualization_msgs.msg import Marker

    mesh = _mesh(n_sub, colored)
    raw = fp.mesh_to_marker_cdr(mesh, "map", 123_456_789_012, "mesh", 3)
    got = deserialize_message(raw, Marker)
    assert got == deserialize_message(serialize_message(co.mesh_to_marker(mesh, "map", 123_456_789_012, "mesh", 3)),
                                      Marker)
    assert len(got.points) == 3 * len(mesh.triangles) and len(got.colors) == (len(got.points) if colored else 0)
    empty = deserialize_message(fp.mesh_to_marker_cdr(co.EmptyMesh(), "map"), Marker)
    assert empty.action == Marker.DELETE


# ----------------------------------------------------------------------------- the guard


def _changed_copy(cls, extra: str | None = "int32", retype: tuple[str, str] | None = None):
    """A class derived from the generated message ``cls`` whose definition has one more field
    ``extra`` (or field ``retype[0]`` of type ``retype[1]``), as if its .msg had been edited;
    same name and module, so rclpy still converts it (the extra field is not sent)."""
    from rosidl_parser.definition import BasicType

    fields = cls.get_fields_and_field_types()
    slot_types = list(cls.SLOT_TYPES)
    if retype:
        fields[retype[0]] = retype[1]
        slot_types[list(fields).index(retype[0])] = BasicType(retype[1])
    if extra:
        fields["extra"] = extra
        slot_types.append(BasicType(extra))

    def __init__(self, **kwargs):
        cls.__init__(self, check_fields=False, **kwargs)
        self._extra = 0

    return type(cls)(cls.__name__, (cls,), {"__slots__": ("_extra",), "_fields_and_field_types": fields,
                                             "SLOT_TYPES": tuple(slot_types), "__init__": __init__,
                                             "__module__": cls.__module__})


def _fallbacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == fp.__name__ and "rclpy's conversion" in r.getMessage()]


def test_points_array_of_a_changed_point_falls_back_and_warns_once(caplog):
    Changed = _changed_copy(Point)
    pts = [Changed(x=1.0, y=-2.0, z=0.5), Changed(x=3.0, y=4.0, z=-6.25)]
    assert "added extra: int32" in fp.XYZ_SLOTS.refusal(Changed)
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        for _ in range(3):
            np.testing.assert_array_equal(fp.points_array(pts), [[1.0, -2.0, 0.5], [3.0, 4.0, -6.25]])
        assert fp.xyz_msgs([[1.0, 2.0, 3.0]], Changed)[0].y == 2.0  # the constructor: _extra is set
    (msg,) = _fallbacks(caplog)
    assert "Point/Vector3 slot access" in msg and "geometry_msgs/Point" in msg and "extra: int32" in msg


def test_a_changed_field_type_is_refused_by_slot_types():
    Retyped = _changed_copy(Point, extra=None, retype=("y", "float"))
    assert "changed y: double -> float" in fp.XYZ_SLOTS.refusal(Retyped)

    class OnlyTypes(Point):  # the field list says double, the slots' types say float
        __slots__ = ()
        SLOT_TYPES = Retyped.SLOT_TYPES

    assert "SLOT_TYPES" in fp.XYZ_SLOTS.refusal(OnlyTypes)
    assert fp.QUERY_REQUEST.refusal(QueryField.Request, Retyped) is not None  # a nested type is mirrored too


def test_query_requests_of_a_changed_definition_stay_messages(caplog):
    from types import SimpleNamespace

    Changed = _changed_copy(QueryField.Request)
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        assert array_request_type(Changed) is None and array_request_type(Changed) is None
    assert len(_fallbacks(caplog)) == 1 and "QueryField_Request" in _fallbacks(caplog)[0]
    warnings = []
    srv = SimpleNamespace(srv_type=SimpleNamespace(Request=Changed, Response=QueryField.Response))
    fp.use_arrays_for_queries(srv, warnings.append)
    assert srv.srv_type.Request is Changed and hasattr(srv.srv_type.Response(), "gradients_xyz")
    assert len(warnings) == 1 and "requests as arrays" in warnings[0] and "extra: int32" in warnings[0]
    # what the node then receives: the generated conversion, same points
    pts = [(1.5, -2.25, 3.0), (0.0, 1e-3, -7.5)]
    wire = serialize_message(QueryField.Request(points=[Point(x=x, y=y, z=z) for x, y, z in pts]))
    req = deserialize_message(wire, srv.srv_type.Request)
    assert not isinstance(req, QueryRequestArrays)
    np.testing.assert_array_equal(fp.points_array(req.points), pts)


def test_use_arrays_for_queries_of_the_real_service():
    from types import SimpleNamespace

    warnings = []
    srv = SimpleNamespace(srv_type=QueryField)
    fp.use_arrays_for_queries(srv, warnings.append)
    assert warnings == []
    wire = serialize_message(QueryField.Request(points=[Point(x=1.0, y=2.0, z=3.0)], want_gradient=True))
    got = deserialize_message(wire, srv.srv_type.Request)
    assert isinstance(got, QueryRequestArrays) and got.want_gradient and got.points_xyz.tolist() == [[1.0, 2.0, 3.0]]
    assert srv.srv_type.Response().gradients_xyz is None


def test_client_of_a_changed_response_keeps_messages(caplog):
    from types import SimpleNamespace

    srv_type = SimpleNamespace(Request=QueryField.Request, Response=_changed_copy(QueryField.Response))
    client = SimpleNamespace(srv_type=srv_type)
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        assert fp.use_arrays(client) is None
    assert client.srv_type is srv_type and len(_fallbacks(caplog)) == 1


def test_marker_cdr_of_a_changed_marker_is_serialized_by_rclpy(monkeypatch, caplog):
    import visualization_msgs.msg
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker

    mesh = _mesh(1, True)
    want = deserialize_message(serialize_message(co.mesh_to_marker(mesh, "map", 7, "mesh", 2)), Marker)
    Changed = _changed_copy(Marker, extra="double")
    monkeypatch.setattr(visualization_msgs.msg, "Marker", Changed)
    assert "added extra: double" in fp.MARKER_CDR.refusal(Changed, Point, ColorRGBA)
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        got = [deserialize_message(fp.mesh_to_marker_cdr(mesh, "map", 7, "mesh", 2), Marker) for _ in range(2)]
    assert got[0] == want and got[1] == want
    (msg,) = _fallbacks(caplog)
    assert "mesh Marker as spliced CDR bytes" in msg and "visualization_msgs/Marker" in msg


def test_a_failed_probe_keeps_the_generated_type_and_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(fp, "derive_response_type", lambda t: None)  # as if the C layout had moved
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        assert array_response_type(QueryField.Response) is None and array_response_type(QueryField.Response) is None
    (msg,) = _fallbacks(caplog)
    assert "responses as arrays" in msg and "probe" in msg
