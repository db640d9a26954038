"""Products and numpy arrays -> standard ROS messages (the node's output edge).

Only standard message types, so RViz shows everything without plugins:
  mesh -> visualization_msgs/Marker TRIANGLE_LIST with per-vertex colours
  2D occupancy -> nav_msgs/OccupancyGrid
  points (+ a scalar such as distance) -> sensor_msgs/PointCloud2 (float32 x, y, z[, name])
  images -> sensor_msgs/Image (rgb8 or 32FC1), intrinsics -> sensor_msgs/CameraInfo
  node statistics -> diagnostic_msgs/DiagnosticArray
Message classes come from the installed ROS message packages (no rclpy node needed).
"""

from __future__ import annotations

import array
import dataclasses
from dataclasses import dataclass

import numpy as np


def stamp_from_ns(stamp_ns: int):
    from builtin_interfaces.msg import Time

    stamp_ns = int(stamp_ns)
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def make_header(frame_id: str, stamp_ns: int):
    from std_msgs.msg import Header

    return Header(frame_id=str(frame_id), stamp=stamp_from_ns(stamp_ns))


def mesh_arrays(mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices (N,3) float, triangles (M,3) int, colors (N,3) float in [0,1] or None) of an
    open3d TriangleMesh or any object with those attributes."""
    V = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    F = np.asarray(mesh.triangles, dtype=np.int64).reshape(-1, 3)
    C = None
    if hasattr(mesh, "vertex_colors"):
        C = np.asarray(mesh.vertex_colors, dtype=np.float64).reshape(-1, 3)
        if len(C) != len(V):
            C = None
    return V, F, C


def mesh_to_marker(mesh, frame_id: str, stamp_ns: int = 0, ns: str = "mesh", marker_id: int = 0,
                   default_rgba=(0.7, 0.7, 0.7, 1.0)):
    """Triangle mesh -> Marker TRIANGLE_LIST; 3 points (and 3 colours) per triangle.

    An empty mesh gives a DELETE marker of the same ns/id, so RViz clears the old one.
    """
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker

    from neural_mapping.ros.fastpath import rgba_msgs, xyz_msgs

    V, F, C = mesh_arrays(mesh)
    m = Marker()
    m.header = make_header(frame_id, stamp_ns)
    m.ns = ns
    m.id = int(marker_id)
    m.type = Marker.TRIANGLE_LIST
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = 1.0
    m.color = ColorRGBA(r=float(default_rgba[0]), g=float(default_rgba[1]), b=float(default_rgba[2]),
                        a=float(default_rgba[3]))
    if len(F) == 0:
        m.action = Marker.DELETE
        return m
    m.action = Marker.ADD
    corners = F.reshape(-1)  # (3M,)
    m.points = xyz_msgs(V[corners])  # the generated classes' slots filled directly (ros/fastpath.py)
    if C is not None:
        m.colors = rgba_msgs(np.clip(C[corners], 0.0, 1.0))
    return m


class EmptyMesh:
    """A mesh without triangles: ``mesh_to_marker(EmptyMesh(), ...)`` is the DELETE marker."""

    vertices = np.zeros((0, 3))
    triangles = np.zeros((0, 3), dtype=np.int64)


def vectors_msgs(vecs: np.ndarray) -> list:
    """(N, 3) -> list of geometry_msgs/Vector3."""
    from geometry_msgs.msg import Vector3

    from neural_mapping.ros.fastpath import xyz_msgs

    return xyz_msgs(vecs, Vector3)


def float32_array(values: np.ndarray) -> array.array:
    """numpy -> array.array('f') (what float32[] message fields hold), without a Python loop."""
    return array.array("f", np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1)).tobytes())


def marker_triangles(m) -> np.ndarray:
    """Marker TRIANGLE_LIST -> (M, 3, 3) float64 triangle corners (inverse of mesh_to_marker)."""
    from neural_mapping.ros.fastpath import points_array

    return points_array(m.points).reshape(-1, 3, 3)


def occupancy_to_msg(sl, frame_id: str, stamp_ns: int = 0, z_m: float = 0.0):
    """OccupancySlice (data int8 (H,W) 0/100/-1, row = y index from origin_xy, col = x) -> OccupancyGrid."""
    from nav_msgs.msg import OccupancyGrid

    data = np.asarray(sl.data, dtype=np.int8)
    if data.ndim != 2:
        raise ValueError(f"occupancy data must be 2D (H, W), got shape {data.shape}")
    H, W = data.shape
    g = OccupancyGrid()
    g.header = make_header(frame_id, stamp_ns)
    g.info.map_load_time = g.header.stamp
    g.info.resolution = float(sl.resolution)
    g.info.width = int(W)
    g.info.height = int(H)
    g.info.origin.position.x = float(sl.origin_xy[0])
    g.info.origin.position.y = float(sl.origin_xy[1])
    g.info.origin.position.z = float(z_m)
    g.info.origin.orientation.w = 1.0
    g.data = array.array("b", data.reshape(-1).tobytes())
    return g


def occupancy_cell_value(g, x: float, y: float) -> int | None:
    """Value of the cell of OccupancyGrid ``g`` holding map point (x, y); None outside the grid."""
    i = int(np.floor((x - g.info.origin.position.x) / g.info.resolution))
    j = int(np.floor((y - g.info.origin.position.y) / g.info.resolution))
    if not (0 <= i < g.info.width and 0 <= j < g.info.height):
        return None
    return int(g.data[j * g.info.width + i])


def points_to_cloud(pts: np.ndarray, frame_id: str, stamp_ns: int = 0, scalar: np.ndarray | None = None,
                    scalar_name: str = "distance"):
    """(N,3) points [+ (N,) scalar] -> PointCloud2 of float32 fields x, y, z[, scalar_name], dense."""
    from sensor_msgs.msg import PointCloud2, PointField

    pts = np.asarray(pts, dtype=np.float32).reshape(-1, 3)
    cols = [pts]
    names = ["x", "y", "z"]
    if scalar is not None:
        s = np.asarray(scalar, dtype=np.float32).reshape(-1, 1)
        if len(s) != len(pts):
            raise ValueError(f"{scalar_name}: {len(s)} values for {len(pts)} points")
        cols.append(s)
        names.append(scalar_name)
    arr = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)
    msg = PointCloud2()
    msg.header = make_header(frame_id, stamp_ns)
    msg.height = 1
    msg.width = int(len(pts))
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = arr.tobytes()
    return msg


def cloud_to_array(msg) -> np.ndarray:
    """PointCloud2 of float32 fields -> (N, n_fields) float32 (inverse of points_to_cloud)."""
    n = len(msg.fields)
    for f in msg.fields:
        if f.datatype != 7 or f.count != 1:  # 7 = FLOAT32
            raise ValueError(f"field {f.name}: only float32 scalar fields are supported")
    if msg.point_step != 4 * n:
        raise ValueError(f"point_step {msg.point_step} != 4 * {n} fields")
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(-1, n)


def rgb_to_image(rgb: np.ndarray, frame_id: str, stamp_ns: int = 0):
    """(H,W,3) uint8, or float in [0,1] -> Image rgb8."""
    from sensor_msgs.msg import Image

    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"colour image must be (H, W, 3), got {a.shape}")
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    H, W = a.shape[:2]
    msg = Image()
    msg.header = make_header(frame_id, stamp_ns)
    msg.height, msg.width = int(H), int(W)
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(3 * W)
    msg.data = np.ascontiguousarray(a).tobytes()
    return msg


def depth_to_image(depth_m: np.ndarray, frame_id: str, stamp_ns: int = 0):
    """(H,W) metres -> Image 32FC1 (0 = no hit)."""
    from sensor_msgs.msg import Image

    d = np.ascontiguousarray(np.asarray(depth_m, dtype="<f4"))
    if d.ndim != 2:
        raise ValueError(f"depth image must be (H, W), got {d.shape}")
    H, W = d.shape
    msg = Image()
    msg.header = make_header(frame_id, stamp_ns)
    msg.height, msg.width = int(H), int(W)
    msg.encoding = "32FC1"
    msg.is_bigendian = 0
    msg.step = int(4 * W)
    msg.data = d.tobytes()
    return msg


def camera_info_msg(K: np.ndarray, height: int, width: int, frame_id: str, stamp_ns: int = 0):
    """Pinhole intrinsics -> CameraInfo (plumb_bob, zero distortion, P = [K | 0])."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header = make_header(frame_id, stamp_ns)
    msg.height, msg.width = int(height), int(width)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1).tolist()
    return msg


def T_to_pose(T: np.ndarray):
    """4x4 -> geometry_msgs/Pose (quaternion x, y, z, w)."""
    from geometry_msgs.msg import Pose

    from neural_mapping.camera import R_to_quat

    T = np.asarray(T, dtype=np.float64)
    q = R_to_quat(T[:3, :3])
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in T[:3, 3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
    return p


def pose_to_T(pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4; ValueError on a non-finite or zero quaternion."""
    from neural_mapping.camera import pose_to_T as _pose_to_T

    t = [pose.position.x, pose.position.y, pose.position.z]
    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w], dtype=np.float64)
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise ValueError("pose has non-finite values")
    n = float(np.linalg.norm(q))
    if n < 1e-6:
        raise ValueError("pose orientation quaternion is zero")
    return _pose_to_T(t, q / n)


@dataclass
class NodeStatus:
    """What ~/status reports (one DiagnosticStatus, one KeyValue per field)."""

    device: str
    state: str  # 'mapping', 'paused', 'waiting for frames', 'error: ...'
    frames_received: int  # synchronised RGB-D+pose sets converted to frames
    frames_added: int  # accepted by the mapper
    frames_rejected: int  # refused by the mapper (e.g. too little valid depth)
    dropped_queue_full: int  # evicted from the bounded queue (trainer too slow)
    dropped_malformed: int  # messages that could not be converted (encoding, size, NaN pose)
    dropped_no_pose: int  # image sets with no pose bracketing their stamp
    dropped_unsynced: int  # messages that never found partners within the slop
    dropped_paused: int  # frames received while training was paused
    queue_length: int
    keyframes: int
    steps: int
    steps_per_s: float
    loss: float
    memory_mb: float  # process resident set size
    gpu_memory_mb: float  # torch.cuda allocated (0 on CPU)
    products_s: str = ""  # seconds the last computation of each product took, e.g. "mesh=0.8 occupancy=0.3"
    last_error: str = ""
    # ticks of each product's rate timer served per second (last 120 s): below the rate = the duty budget limits it
    mesh_hz_achieved: float = 0.0
    occupancy_hz_achieved: float = 0.0
    voxels_hz_achieved: float = 0.0
    esdf_hz_achieved: float = 0.0
    render_hz_achieved: float = 0.0
    oom_retries: int = 0  # training steps retried at half the rays after an out-of-memory error
    input_counts: str = ""  # messages received per input stream, e.g. "color=300 depth=298 info=300 pose=300"
    missing_estimated: int = 0  # color/depth messages missing from their stream (stamp gaps > 1.5 periods)


def status_to_diagnostics(st: NodeStatus, name: str, hardware_id: str, stamp_ns: int = 0):
    """NodeStatus -> DiagnosticArray (level ERROR when state starts with 'error', WARN when
    malformed messages were dropped, else OK)."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    s = DiagnosticStatus()
    s.name = name
    s.hardware_id = hardware_id
    if st.state.startswith("error"):
        s.level, s.message = DiagnosticStatus.ERROR, st.state
    elif st.dropped_malformed:
        s.level, s.message = DiagnosticStatus.WARN, f"{st.state}; {st.dropped_malformed} malformed messages dropped"
    else:
        s.level, s.message = DiagnosticStatus.OK, st.state
    for f in dataclasses.fields(st):
        v = getattr(st, f.name)
        s.values.append(KeyValue(key=f.name, value=f"{v:.6g}" if isinstance(v, float) else str(v)))
    arr = DiagnosticArray()
    arr.header = make_header("", stamp_ns)
    arr.status = [s]
    return arr


def diagnostics_to_status(arr) -> NodeStatus:
    """DiagnosticArray (first status) -> NodeStatus (inverse of status_to_diagnostics)."""
    kv = {k.key: k.value for k in arr.status[0].values}
    kwargs = {}
    for f in dataclasses.fields(NodeStatus):
        raw = kv.get(f.name, "")
        kwargs[f.name] = int(raw) if f.type == "int" else float(raw) if f.type == "float" else raw
    return NodeStatus(**kwargs)
