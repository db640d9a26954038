"""Array forms of the ``~/query_field`` request and response: 100 k points without 100 k Python objects.

The mechanics only: use these through :mod:`neural_mapping.ros.fastpath`, whose guard first
compares the message definitions with the C layout mirrored here (``_QueryFieldRequestC``,
``_QueryFieldResponseC``, ``geometry_msgs/Point`` and ``Vector3`` as three doubles).

rclpy turns a taken request into Python with the C function its type's metaclass names
(``_CONVERT_TO_PY``); for ``geometry_msgs/Point[] points`` that function builds one ``Point``
object per point (its Python ``__init__`` included): ~0.15 s for 100 k points on this project's
2-core machine, the largest share of a query's end-to-end time, spent in the executor thread
while the trainer competes for the GIL. :func:`derive_request_type` makes a request class whose
metaclass inherits every type-support function of the generated one but converts the taken C
message straight into a numpy array (one copy of the C sequence of ``{double x, y, z}``):
~1 ms for 100 k points. The wire type, its hash and every client stay unchanged; only what the
node's callback receives differs (a :class:`QueryRequestArrays`).

The response goes the other way: :func:`derive_response_type` derives the generated response
class (same name and module) with a ``gradients_xyz`` slot; its metaclass's ``_CONVERT_FROM_PY``
runs the generated conversion (sdf, occupancy, success, message; ``gradients`` left empty) and
then fills the C ``Vector3`` sequence from the array with rosidl's own ``__Sequence__init``
(so rosidl's ``fini`` frees it) and one copy: 100 k gradients ~0.16 s -> ~1 ms.

The C layout read here is rosidl's: a sequence is ``{T *data; size_t size; size_t capacity}``,
``geometry_msgs/Point`` is three doubles, and the request struct holds ``points`` then
``want_gradient`` in IDL order, the response ``sdf``, ``occupancy``, ``gradients``, ``success``,
``message``. Each ``derive_*`` function also probes its conversion on a serialised message
and returns None (the caller then keeps the generated type) when anything differs.
"""

from __future__ import annotations

import ctypes

import numpy as np
from rclpy.type_support import check_for_type_support


class _Sequence(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("size", ctypes.c_size_t), ("capacity", ctypes.c_size_t)]


class _QueryFieldRequestC(ctypes.Structure):  # neural_mapping_interfaces__srv__QueryField_Request
    _fields_ = [("points", _Sequence), ("want_gradient", ctypes.c_bool)]


class _QueryFieldResponseC(ctypes.Structure):  # neural_mapping_interfaces__srv__QueryField_Response
    _fields_ = [("sdf", _Sequence), ("occupancy", _Sequence), ("gradients", _Sequence), ("success", ctypes.c_bool),
                ("message", _Sequence)]  # rosidl_runtime_c__String has the layout of a sequence


def _capsule(fn) -> object:
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ctypes.cast(fn, ctypes.c_void_p), None, None)


def _derived_meta(meta, **converters):
    """A subclass of a generated message metaclass with some type-support functions replaced
    (capsules of ctypes callbacks); everything else (create, destroy, type support) is inherited."""
    return type(meta.__name__ + "Arrays", (meta,), {name: _capsule(fn) for name, fn in converters.items()})


def _sequence_init(msg_cls):
    """rosidl's ``<pkg>__msg__<Type>__Sequence__init(seq *, size)`` of a geometry_msgs message class
    (its C library is loaded by the type support)."""
    check_for_type_support(msg_cls)
    lib = ctypes.CDLL("libgeometry_msgs__rosidl_generator_c.so")
    init = getattr(lib, f"geometry_msgs__msg__{msg_cls.__name__}__Sequence__init")
    init.restype, init.argtypes = ctypes.c_bool, [ctypes.c_void_p, ctypes.c_size_t]
    return init


def _copy_seq(seq: _Sequence, ctype, width: int, dtype) -> np.ndarray:
    """A copy of a C sequence of ``width``-tuples of ``ctype`` as an (n,) or (n, width) array."""
    n = int(seq.size)
    shape = (n, width) if width > 1 else (n,)
    if n == 0:
        return np.empty(shape, dtype)
    return np.ctypeslib.as_array(ctypes.cast(seq.data, ctypes.POINTER(ctype)), shape=shape).copy()


def _fill_seq(init, seq_address: int, arr: np.ndarray) -> bool:
    """Allocate the C sequence at ``seq_address`` with rosidl's ``init`` (so its ``fini`` frees it)
    and copy the rows of ``arr`` (float64, C-contiguous) into it."""
    if not init(seq_address, len(arr)):
        return False
    if len(arr):
        ctypes.memmove(_Sequence.from_address(seq_address).data, arr.ctypes.data, arr.nbytes)
    return True


class QueryRequestArrays:
    """A ``QueryField`` request as arrays: ``points_xyz`` (N, 3) float64 and ``want_gradient``;
    ``error`` is set (and ``points_xyz`` None) when the C message could not be read."""

    __slots__ = ("points_xyz", "want_gradient", "error")

    def __init__(self, points_xyz: np.ndarray | None, want_gradient: bool, error: str | None = None):
        self.points_xyz = points_xyz
        self.want_gradient = want_gradient
        self.error = error

    def __len__(self) -> int:
        return 0 if self.points_xyz is None else len(self.points_xyz)


def _request_to_arrays(address: int) -> QueryRequestArrays:
    try:
        c = _QueryFieldRequestC.from_address(address)
        # a copy: the C message is freed after this returns
        return QueryRequestArrays(_copy_seq(c.points, ctypes.c_double, 3, np.float64), bool(c.want_gradient))
    except BaseException as e:  # noqa: BLE001 - an exception must not cross into rclpy's C++
        return QueryRequestArrays(None, False, f"{type(e).__name__}: {e}")


_TO_PY = ctypes.CFUNCTYPE(ctypes.py_object, ctypes.c_void_p)
_to_py_fn = _TO_PY(_request_to_arrays)  # kept alive for the process: rclpy holds its address


def derive_request_type(request_type):
    """A class to take ``QueryField`` requests with (see the module doc), or None when the check
    on a serialised request fails (then take requests with ``request_type`` itself)."""
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message, serialize_message

    check_for_type_support(request_type)
    fast = _derived_meta(type(request_type), _CONVERT_TO_PY=_to_py_fn)(request_type.__name__ + "Arrays", (), {})
    try:
        probe = [(1.5, -2.25, 3.0), (0.0, 1e-3, -7.5), (4.0, 5.0, 6.0)]
        wire = serialize_message(request_type(points=[Point(x=x, y=y, z=z) for x, y, z in probe], want_gradient=True))
        got = deserialize_message(wire, fast)
        empty = deserialize_message(serialize_message(request_type()), fast)
    except Exception:  # noqa: BLE001
        return None
    ok = (isinstance(got, QueryRequestArrays) and got.error is None and got.want_gradient is True
          and np.array_equal(got.points_xyz, np.array(probe)) and isinstance(empty, QueryRequestArrays)
          and empty.points_xyz.shape == (0, 3) and empty.want_gradient is False)
    return fast if ok else None


_FROM_PY = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.py_object, ctypes.c_void_p)
_response_state: dict = {}  # generated converter and Vector3 sequence init, set by derive_response_type


def _response_from_py(msg, address: int) -> bool:
    """Fill the C response at ``address`` from ``msg`` (an array response); False on failure."""
    try:
        g = msg.gradients_xyz
        if g is None or len(msg.gradients):  # no array, or gradients set as messages: the generated path
            return bool(_response_state["generated"](msg, address))
        g = np.ascontiguousarray(g, dtype=np.float64).reshape(-1, 3)
        return bool(_response_state["generated"](msg, address)) and _fill_seq(
            _response_state["vector3_init"], address + _QueryFieldResponseC.gradients.offset, g)
    except BaseException:  # noqa: BLE001 - an exception must not cross into rclpy's C++
        return False


_from_py_fn = _FROM_PY(_response_from_py)


def derive_response_type(response_type):
    """A subclass of the generated ``QueryField`` response with ``gradients_xyz`` ((N, 3) array,
    sent as ``gradients``; see the module doc), or None when its check fails."""
    from rclpy.serialization import deserialize_message, serialize_message

    check_for_type_support(response_type)
    meta = type(response_type)
    try:
        from geometry_msgs.msg import Vector3

        init = _sequence_init(Vector3)
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        # PYFUNCTYPE: the generated conversion reads Python objects, so the GIL stays held
        generated = ctypes.PYFUNCTYPE(ctypes.c_bool, ctypes.py_object, ctypes.c_void_p)(
            get(meta._CONVERT_FROM_PY, None))
    except (OSError, AttributeError, ValueError):
        return None
    _response_state.update(generated=generated, vector3_init=init)
    fast_meta = _derived_meta(meta, _CONVERT_FROM_PY=_from_py_fn)

    def __init__(self, **kwargs):
        self.gradients_xyz = None
        response_type.__init__(self, **kwargs)

    # the same name and module as the generated class: its conversion checks them (in debug builds)
    fast = fast_meta(response_type.__name__, (response_type,),
                     {"__slots__": ("gradients_xyz",), "__module__": response_type.__module__, "__init__": __init__})
    try:
        probe = np.array([[0.5, -1.0, 2.0], [3.0, 4.0, -5.25]])
        r = fast()
        r.success, r.message, r.sdf, r.gradients_xyz = True, "probe", [1.0, 2.0], probe
        got = deserialize_message(serialize_message(r), response_type)
        plain = fast()
        plain.success = True
        plain = deserialize_message(serialize_message(plain), response_type)
    except Exception:  # noqa: BLE001
        return None
    ok = (got.success and got.message == "probe" and list(got.sdf) == [1.0, 2.0]
          and np.array_equal([[v.x, v.y, v.z] for v in got.gradients], probe)
          and plain.success and len(plain.gradients) == 0)
    return fast if ok else None


# ----------------------------------------------------------------------------- client side
# A Python planner pays the same per-point conversions on its side: building the request's
# Point messages and turning the response's Vector3s into objects (~0.13 s per 100 k each).
# ``fastpath.use_arrays(client)`` makes an rclpy client of ``QueryField`` send QueryRequestArrays and
# receive QueryResponseArrays instead (same wire type; C++ clients have arrays natively).


class QueryResponseArrays:
    """A ``QueryField`` response as arrays: ``sdf`` (N,) and ``occupancy`` (N,) float32,
    ``gradients`` (M, 3) float64 (M = N when asked for, else 0), ``success``, ``message``."""

    __slots__ = ("sdf", "occupancy", "gradients", "success", "message")

    def __init__(self, sdf, occupancy, gradients, success: bool, message: str):
        self.sdf, self.occupancy, self.gradients = sdf, occupancy, gradients
        self.success, self.message = success, message


def _response_to_arrays(address: int):
    try:
        c = _QueryFieldResponseC.from_address(address)
        msg = ctypes.string_at(c.message.data, c.message.size).decode("utf-8", "replace") if c.message.size else ""
        return QueryResponseArrays(_copy_seq(c.sdf, ctypes.c_float, 1, np.float32),
                                   _copy_seq(c.occupancy, ctypes.c_float, 1, np.float32),
                                   _copy_seq(c.gradients, ctypes.c_double, 3, np.float64), bool(c.success), msg)
    except BaseException as e:  # noqa: BLE001 - an exception must not cross into rclpy's C++
        return QueryResponseArrays(None, None, None, False, f"the response could not be read: {type(e).__name__}: {e}")


class _OutgoingRequestArrays(QueryRequestArrays):
    """A request a client sends from arrays: checked here, so that its conversion cannot fail."""

    __slots__ = ()

    def __init__(self, points_xyz, want_gradient: bool = False):
        try:
            pts = np.ascontiguousarray(points_xyz, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"points_xyz must be an (N, 3) array of numbers: {e}") from None
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points_xyz must be an (N, 3) array of numbers, got shape {pts.shape}")
        super().__init__(pts, bool(want_gradient))


def _request_from_arrays(msg, address: int) -> bool:
    try:
        if not _fill_seq(_client_state["point_init"], address + _QueryFieldRequestC.points.offset, msg.points_xyz):
            return False
        _QueryFieldRequestC.from_address(address).want_gradient = bool(msg.want_gradient)
        return True
    except BaseException:  # noqa: BLE001
        return False


_to_arrays_fn = _TO_PY(_response_to_arrays)
_from_arrays_fn = _FROM_PY(_request_from_arrays)
_client_state: dict = {}


def derive_client_types(srv_type):
    """(request class, response class) for a client of ``srv_type`` (QueryField) that sends and
    receives arrays (see ``fastpath.use_arrays``), or None when their check fails."""
    from rclpy.serialization import deserialize_message, serialize_message

    for t in (srv_type.Request, srv_type.Response):
        check_for_type_support(t)
    try:
        from geometry_msgs.msg import Point

        _client_state["point_init"] = _sequence_init(Point)
    except (OSError, AttributeError):
        return None
    req_cls = _derived_meta(type(srv_type.Request), _CONVERT_FROM_PY=_from_arrays_fn)(
        "QueryRequestArraysOut", (_OutgoingRequestArrays,), {"__slots__": ()})
    resp_cls = _derived_meta(type(srv_type.Response), _CONVERT_TO_PY=_to_arrays_fn)("QueryResponseArraysIn", (), {})
    try:
        probe = np.array([[1.5, -2.25, 3.0], [0.0, 1e-3, -7.5]])
        sent = deserialize_message(serialize_message(req_cls(probe, True)), srv_type.Request)
        ref = srv_type.Response(success=True, message="probe \u00e9")
        ref.sdf, ref.occupancy = [0.5, -1.0], [0.25, 1.0]
        from geometry_msgs.msg import Vector3

        ref.gradients = [Vector3(x=1.0, y=2.0, z=3.0), Vector3(x=-4.0, y=0.0, z=0.5)]
        got = deserialize_message(serialize_message(ref), resp_cls)
    except Exception:  # noqa: BLE001
        return None
    ok = (np.array_equal([[p.x, p.y, p.z] for p in sent.points], probe) and sent.want_gradient is True
          and isinstance(got, QueryResponseArrays) and got.success and got.message == "probe \u00e9"
          and np.array_equal(got.sdf, [0.5, -1.0]) and np.array_equal(got.occupancy, [0.25, 1.0])
          and np.array_equal(got.gradients, [[1.0, 2.0, 3.0], [-4.0, 0.0, 0.5]]))
    return (req_cls, resp_cls) if ok else None
