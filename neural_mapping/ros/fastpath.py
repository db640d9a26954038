"""Every place the package bypasses rclpy's per-object message conversion, each behind one guard.

The fast paths (all give exactly what rclpy's own conversion gives; tested):
  * :func:`points_array` reads ``geometry_msgs/Point[]`` through the generated classes' slots
    ``_x, _y, _z`` instead of their properties (2x faster);
  * :func:`xyz_msgs` / :func:`rgba_msgs` build ``Point``/``Vector3``/``ColorRGBA`` messages by
    filling those slots (~3x faster than the keyword constructors);
  * :func:`mesh_to_marker_cdr` splices a mesh's vertices and colours into the serialized (CDR)
    bytes of a template ``visualization_msgs/Marker`` (no Python object per triangle corner);
  * :func:`use_arrays_for_queries` (server) and :func:`use_arrays` (client) make ``query_field``
    requests and responses numpy arrays by converting the C message with ctypes
    (:mod:`neural_mapping.ros.fastpath_srv`).

Each mirrors a message definition: the ``*_FIELDS`` constants below (field name -> rosidl type,
in IDL order). Its :class:`Guard` compares them with the generated class
(``get_fields_and_field_types()``, ``SLOT_TYPES``, and ``__slots__`` where slots are used) before
deriving, splicing or touching a slot; when they differ (a changed ``.msg``/``.srv``, another
rosidl version) the caller takes the plain rclpy path and the reason is logged once per message
class (on this module's logger, or through a ``warn`` callback).
"""

from __future__ import annotations

import logging
from itertools import chain
from operator import attrgetter
from typing import Callable

import numpy as np

from neural_mapping.ros.fastpath_srv import (QueryRequestArrays, QueryResponseArrays, derive_client_types,
                                             derive_request_type, derive_response_type)

logger = logging.getLogger(__name__)

__all__ = ["Guard", "MARKER_CDR", "QUERY_CLIENT", "QUERY_REQUEST", "QUERY_RESPONSE", "QueryRequestArrays",
           "QueryResponseArrays", "RGBA_SLOTS", "XYZ_SLOTS", "array_client_types", "array_request_type",
           "array_response_type", "layout_difference", "mesh_to_marker_cdr", "points_array", "rgba_msgs", "use_arrays",
           "use_arrays_for_queries", "xyz_msgs"]

# ----------------------------------------------------------------------------- mirrored definitions

XYZ_FIELDS = {"x": "double", "y": "double", "z": "double"}  # geometry_msgs/Point and Vector3
RGBA_FIELDS = {"r": "float", "g": "float", "b": "float", "a": "float"}  # std_msgs/ColorRGBA
QUERY_REQUEST_FIELDS = {"points": "sequence<geometry_msgs/Point>", "want_gradient": "boolean"}
QUERY_RESPONSE_FIELDS = {"sdf": "sequence<float>", "occupancy": "sequence<float>",
                         "gradients": "sequence<geometry_msgs/Vector3>", "success": "boolean", "message": "string"}
MARKER_FIELDS = {  # visualization_msgs/Marker (Jazzy); the splice relies on points then colors, then 4-byte fields
    "header": "std_msgs/Header", "ns": "string", "id": "int32", "type": "int32", "action": "int32",
    "pose": "geometry_msgs/Pose", "scale": "geometry_msgs/Vector3", "color": "std_msgs/ColorRGBA",
    "lifetime": "builtin_interfaces/Duration", "frame_locked": "boolean", "points": "sequence<geometry_msgs/Point>",
    "colors": "sequence<std_msgs/ColorRGBA>", "texture_resource": "string", "texture": "sensor_msgs/CompressedImage",
    "uv_coordinates": "sequence<visualization_msgs/UVCoordinate>", "text": "string", "mesh_resource": "string",
    "mesh_file": "visualization_msgs/MeshFile", "mesh_use_embedded_materials": "boolean"}


def _type_name(t) -> str:
    """A ``SLOT_TYPES`` entry (rosidl_parser.definition) in ``get_fields_and_field_types()``'s spelling."""
    kind = type(t).__name__
    if kind == "BasicType":
        return t.typename
    if kind == "UnboundedString":
        return "string"
    if kind == "NamespacedType":
        return f"{t.namespaces[0]}/{t.name}"
    if kind == "UnboundedSequence":
        return f"sequence<{_type_name(t.value_type)}>"
    return repr(t)  # arrays, bounded strings and sequences: no fast path mirrors them


def _msg_name(cls) -> str:
    return f"{cls.__module__.split('.')[0]}/{cls.__name__}"


def layout_difference(cls, fields: dict[str, str], slots: bool = False) -> str | None:
    """Why the generated message class ``cls`` differs from the mirrored ``fields`` (None: it does
    not). ``slots``: the fast path also reads or writes the instance slots ``_<field>``."""
    have = cls.get_fields_and_field_types()
    if list(have.items()) != list(fields.items()):
        added = [f"{k}: {v}" for k, v in have.items() if k not in fields]
        removed = [f"{k}: {v}" for k, v in fields.items() if k not in have]
        changed = [f"{k}: {fields[k]} -> {have[k]}" for k in have if k in fields and have[k] != fields[k]]
        what = "; ".join(f"{label} {', '.join(x)}" for label, x in
                         (("added", added), ("removed", removed), ("changed", changed)) if x) or "fields reordered"
        return f"{_msg_name(cls)} differs from the definition the fast path mirrors ({what})"
    types = [_type_name(t) for t in getattr(cls, "SLOT_TYPES", ())]
    if types != list(fields.values()):
        return f"{_msg_name(cls)}.SLOT_TYPES {types} differ from the mirrored {list(fields.values())}"
    if slots:
        have_slots = {s for k in cls.__mro__ for s in getattr(k, "__slots__", ())}
        missing = sorted(({f"_{k}" for k in fields} | {"_check_fields"}) - have_slots)
        if missing:
            return f"{_msg_name(cls)} has no slots {missing}"
    return None


class Guard:
    """The one check of a fast path: its mirrored definitions, compared once per message class.

    ``allows(*classes)`` (one class per mirror, in order) is True when each class is a generated
    message with exactly the mirrored fields; otherwise the caller takes rclpy's path, and the
    reason goes to ``warn`` when given (every time) or to this module's logger (once per classes).
    Classes that are not rosidl messages (duck-typed points) are refused without a warning.
    """

    def __init__(self, name: str, *mirrors: dict[str, str], slots: bool = False):
        self.name, self.mirrors, self.slots = name, mirrors, slots
        self._verdicts: dict[tuple, str | None] = {}
        self._warned: set[tuple] = set()

    def refusal(self, *classes) -> str | None:
        """Why the fast path must not run for ``classes`` (None: it may); cached."""
        try:
            return self._verdicts[classes]
        except KeyError:
            pass
        reason = None
        for cls, fields in zip(classes, self.mirrors, strict=True):
            if not hasattr(cls, "get_fields_and_field_types"):
                reason = ""  # not a generated message: nothing to mirror, nothing to report
                break
            reason = layout_difference(cls, fields, self.slots)
            if reason:
                break
        self._verdicts[classes] = reason
        return reason

    def allows(self, *classes, warn: Callable[[str], None] | None = None) -> bool:
        reason = self.refusal(*classes)
        if reason:
            self.fall_back(classes, reason, warn)
        return reason is None

    def fall_back(self, classes: tuple, reason: str, warn: Callable[[str], None] | None = None) -> None:
        """Report that the fast path is not taken for ``classes`` (see the class doc)."""
        text = f"{self.name}: {reason}; using rclpy's conversion instead (slower)"
        if warn is not None:
            warn(text)
        elif classes not in self._warned:
            self._warned.add(classes)
            logger.warning(text)


XYZ_SLOTS = Guard("Point/Vector3 slot access", XYZ_FIELDS, slots=True)
RGBA_SLOTS = Guard("ColorRGBA slot access", RGBA_FIELDS, slots=True)
QUERY_REQUEST = Guard("query_field requests as arrays", QUERY_REQUEST_FIELDS, XYZ_FIELDS)
QUERY_RESPONSE = Guard("query_field responses as arrays", QUERY_RESPONSE_FIELDS, XYZ_FIELDS)
QUERY_CLIENT = Guard("query_field client with arrays", QUERY_REQUEST_FIELDS, QUERY_RESPONSE_FIELDS, XYZ_FIELDS,
                     XYZ_FIELDS)
MARKER_CDR = Guard("mesh Marker as spliced CDR bytes", MARKER_FIELDS, XYZ_FIELDS, RGBA_FIELDS)

# ----------------------------------------------------------------------------- slots


def points_array(points) -> np.ndarray:
    """``geometry_msgs/Point[]`` (or any objects with x, y, z) -> (N, 3) float64."""
    n = len(points)
    if n and XYZ_SLOTS.allows(type(points[0])):
        try:  # the generated classes keep the values in slots _x, _y, _z: reading them skips the properties
            return np.fromiter(chain.from_iterable(map(attrgetter("_x", "_y", "_z"), points)), dtype=np.float64,
                               count=3 * n).reshape(n, 3)
        except AttributeError:  # a list mixing classes
            pass
    return np.fromiter((c for p in points for c in (p.x, p.y, p.z)), dtype=np.float64, count=3 * n).reshape(n, 3)


def xyz_msgs(rows, cls=None) -> list:
    """One ``cls`` (default geometry_msgs/Point; Vector3 works too) per row of an (N, 3) array."""
    if cls is None:
        from geometry_msgs.msg import Point as cls
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3).tolist()
    if not XYZ_SLOTS.allows(cls):
        return [cls(x=x, y=y, z=z) for x, y, z in rows]
    new, out = cls.__new__, []
    append = out.append
    for x, y, z in rows:
        o = new(cls)
        o._x, o._y, o._z, o._check_fields = x, y, z, False
        append(o)
    return out


def rgba_msgs(rows, alpha: float = 1.0) -> list:
    """One ``std_msgs/ColorRGBA`` (alpha ``alpha``) per row of an (N, 3) array in [0, 1]."""
    from std_msgs.msg import ColorRGBA

    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 3).tolist()
    alpha = float(alpha)
    if not RGBA_SLOTS.allows(ColorRGBA):
        return [ColorRGBA(r=r, g=g, b=b, a=alpha) for r, g, b in rows]
    new, out = ColorRGBA.__new__, []
    append = out.append
    for r, g, b in rows:
        o = new(ColorRGBA)
        o._r, o._g, o._b, o._a, o._check_fields = r, g, b, alpha, False
        append(o)
    return out


# ----------------------------------------------------------------------------- query_field as arrays


def _vector_types():
    from geometry_msgs.msg import Point, Vector3

    return Point, Vector3


def _derive_guarded(guard: Guard, classes: tuple, derive, subject, warn):
    """``derive(subject)`` when ``guard`` allows ``classes`` and the derived conversion passes its
    probe (see fastpath_srv); else None, reported."""
    if not guard.allows(*classes, warn=warn):
        return None
    fast = derive(subject)
    if fast is None:
        guard.fall_back(classes, "a probe message converted differently", warn)
    return fast


def array_request_type(request_type, warn: Callable[[str], None] | None = None):
    """A class to take ``QueryField`` requests with as :class:`QueryRequestArrays`, or None (take
    them with ``request_type``) when the guard or the conversion's probe refuses."""
    return _derive_guarded(QUERY_REQUEST, (request_type, _vector_types()[0]), derive_request_type, request_type, warn)


def array_response_type(response_type, warn: Callable[[str], None] | None = None):
    """A subclass of the ``QueryField`` response with a ``gradients_xyz`` array slot, sent as
    ``gradients``, or None (use ``response_type``) when the guard or the probe refuses."""
    return _derive_guarded(QUERY_RESPONSE, (response_type, _vector_types()[1]), derive_response_type, response_type,
                           warn)


def array_client_types(srv_type, warn: Callable[[str], None] | None = None):
    """(request class, response class) of a client of ``srv_type`` that sends and receives arrays,
    or None when the guard or the probe refuses."""
    return _derive_guarded(QUERY_CLIENT, (srv_type.Request, srv_type.Response, *_vector_types()), derive_client_types,
                           srv_type, warn)


def use_arrays_for_queries(srv, warn: Callable[[str], None]) -> None:
    """Make the rclpy service ``srv`` (``QueryField``) take requests as :class:`QueryRequestArrays`
    and send responses whose ``gradients_xyz`` array becomes ``gradients``; the wire type is
    unchanged. ``warn`` gets one message per conversion left to rclpy (requests, responses)."""
    from types import SimpleNamespace

    req = array_request_type(srv.srv_type.Request, warn)
    resp = array_response_type(srv.srv_type.Response, warn)
    # what the executor takes requests with and makes responses of
    srv.srv_type = SimpleNamespace(Request=req or srv.srv_type.Request, Response=resp or srv.srv_type.Response)


def use_arrays(client):
    """Make an rclpy client of ``QueryField`` send :class:`QueryRequestArrays` (build them with
    the returned class: ``Request(points_xyz, want_gradient)``; ValueError unless ``points_xyz``
    is an (N, 3) array of numbers) and receive :class:`QueryResponseArrays`; returns that request
    class, or None (the client is left as it was, with message types) when refused."""
    from types import SimpleNamespace

    types = array_client_types(client.srv_type)
    if types is None:
        return None
    client.srv_type = SimpleNamespace(Request=types[0], Response=types[1])
    return types[0]


# ----------------------------------------------------------------------------- Marker as CDR bytes

_PROBE_P = (1.2345678901234567e-7, -7.654321098765432e-6, 3.1415926535897932e-5)
_PROBE_C = (0.123456789, 0.987654321, 0.5555555, 1.0)
_ONE, _ZERO = b"\x01\x00\x00\x00", b"\x00\x00\x00\x00"


def _probe_cuts(raw: bytes, colored: bool) -> tuple[int, int, int] | str:
    """(offset of the points' length, of their data, of the tail after the colours) in the CDR
    bytes of a template Marker with one probe point (and colour), or why they were not found."""
    probe = np.array(_PROBE_P, "<f8").tobytes()
    d_p = raw.find(probe)
    if d_p < 8 or raw.find(probe, d_p + 1) != -1 or np.frombuffer(raw[d_p - 8:d_p], "<u4").tolist().count(1) != 1:
        return "the probe point was not found once in the template's bytes"
    len_at = d_p - 4 if raw[d_p - 4:d_p] == _ONE else d_p - 8  # 4 bytes of padding or none
    end = d_p + 24
    if colored:
        if raw[end:end + 4] != _ONE or raw[end + 4:end + 20] != np.array(_PROBE_C, "<f4").tobytes():
            return "the probe colour does not follow the probe point"
        return len_at, d_p, end + 20
    if raw[end:end + 4] != _ZERO:
        return "an empty colour sequence does not follow the probe point"
    return len_at, d_p, end + 4


def mesh_to_marker_cdr(mesh, frame_id: str, stamp_ns: int = 0, ns: str = "mesh", marker_id: int = 0,
                       default_rgba=(0.7, 0.7, 0.7, 1.0)) -> bytes:
    """The serialized (CDR) bytes of ``convert_out.mesh_to_marker(...)``, built with numpy.

    Creating one Python Point and ColorRGBA object per triangle corner dominates mesh publishing
    (seconds for 10^5 triangles); ``Publisher.publish`` also takes serialized bytes. A template
    Marker with one probe point (and colour) is serialized by rclpy; the probe locates the
    points sequence, whose length and float64 data are replaced, followed by the colours
    (float32 RGBA) and the template's tail. The spliced data (24 bytes a point, 16 a colour)
    keeps the tail's offset modulo 8, so its alignment stays valid. Deserializing gives exactly
    ``mesh_to_marker``'s message (tested); the plain path when :data:`MARKER_CDR` refuses.
    """
    from geometry_msgs.msg import Point
    from rclpy.serialization import serialize_message
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker

    from neural_mapping.ros import convert_out as co

    head = (frame_id, stamp_ns, ns, marker_id, default_rgba)
    V, F, C = co.mesh_arrays(mesh)
    classes = (Marker, Point, ColorRGBA)
    if len(F) == 0 or not MARKER_CDR.allows(*classes):
        return serialize_message(co.mesh_to_marker(mesh, *head))
    tmpl = co.mesh_to_marker(co.EmptyMesh(), *head)
    tmpl.action = Marker.ADD
    tmpl.points = [Point(x=_PROBE_P[0], y=_PROBE_P[1], z=_PROBE_P[2])]
    if C is not None:
        tmpl.colors = [ColorRGBA(r=_PROBE_C[0], g=_PROBE_C[1], b=_PROBE_C[2], a=_PROBE_C[3])]
    raw = serialize_message(tmpl)
    cuts = _probe_cuts(raw, C is not None)
    if isinstance(cuts, str):
        MARKER_CDR.fall_back(classes, cuts)
        return serialize_message(co.mesh_to_marker(mesh, *head))
    len_at, data_at, tail_at = cuts
    corners = F.reshape(-1)
    n = len(corners)
    parts = [raw[:len_at], np.uint32(n).astype("<u4").tobytes(), raw[len_at + 4:data_at],
             np.ascontiguousarray(V[corners], dtype="<f8").tobytes(),
             np.uint32(n if C is not None else 0).astype("<u4").tobytes()]
    if C is not None:
        rgba = np.ones((n, 4), "<f4")
        rgba[:, :3] = np.clip(C[corners], 0.0, 1.0)
        parts.append(rgba.tobytes())
    parts.append(raw[tail_at:])
    return b"".join(parts)
