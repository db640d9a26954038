"""rosbag2 bags (MCAP or sqlite3) read and written with ``rosbags``: no ROS runtime needed.

Reading: a bag directory (metadata.yaml + storage files) or a bare ``.mcap``/``.db3``
file (a ROS 1 ``.bag`` file reads the same way). Topics are found by message type when unambiguous:
  color  sensor_msgs/Image with a colour encoding (rgb8, bgr8, rgba8, bgra8, mono8)
  depth  sensor_msgs/Image with a depth encoding (16UC1 mm, mono16, 32FC1 m)
  info   sensor_msgs/CameraInfo (with several, the one beside the depth topic, e.g.
         /camera/depth/camera_info for /camera/depth/image_raw)
  pose   geometry_msgs/PoseStamped, nav_msgs/Odometry, geometry_msgs/TransformStamped,
         geometry_msgs/PoseWithCovarianceStamped: the camera-to-map pose, OpenCV optical axes;
         without such a topic, /tf (+ /tf_static): the pose is looked up as T_map_camera at
         each depth stamp, camera = the depth image's header.frame_id (or ``camera_frame``),
         map = ``map_frame`` (default 'map'), by :class:`neural_mapping.io.tf.TfBuffer`
otherwise name them (``color_topic=``, ... or ``--color-topic`` ...). Messages are
synchronised by their header stamps with :class:`neural_mapping.ros.sync.ApproxSync`,
the same code the ROS node uses.

Writing: :func:`write_bag` produces a bag directory (metadata.yaml + MCAP, or sqlite3)
with Jazzy message types on the RealSense-style topics below, stamped with frame times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from neural_mapping.camera import R_to_quat
from neural_mapping.errors import InputError
from neural_mapping.frame import Frame
from neural_mapping.io.base import FrameSource, log
from neural_mapping.ros.convert import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    msgs_to_frame,
    pose_msg_to_T,
    stamp_to_ns,
)
from neural_mapping.ros.sync import ApproxSync, SyncStats

COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_raw"
INFO_TOPIC = "/camera/depth/camera_info"
POSE_TOPIC = "/camera/pose"
CAMERA_FRAME = "camera_color_optical_frame"
MAP_FRAME = "map"

IMAGE_T = "sensor_msgs/msg/Image"
INFO_T = "sensor_msgs/msg/CameraInfo"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "nav_msgs/msg/Odometry", "geometry_msgs/msg/TransformStamped",
              "geometry_msgs/msg/PoseWithCovarianceStamped")
TF_T = "tf2_msgs/msg/TFMessage"


def typestore():
    """The Jazzy type store (Humble where this rosbags lacks Jazzy)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, "ROS2_JAZZY", Stores.ROS2_HUMBLE))


# ----------------------------------------------------------------------------- writing


def write_bag(frames: Iterable[Frame], out_dir: str | Path, storage: str = "mcap", overwrite: bool = False,
              color_topic: str = COLOR_TOPIC, depth_topic: str = DEPTH_TOPIC, info_topic: str = INFO_TOPIC,
              pose_topic: str = POSE_TOPIC, map_frame: str = MAP_FRAME, camera_frame: str = CAMERA_FRAME) -> Path:
    """Write frames as a rosbag2 directory: color rgb8, depth 16UC1 mm, camera_info, PoseStamped.

    Each frame's four messages carry its stamp (header and bag time). ``storage`` is
    'mcap' or 'sqlite3'. The directory must not exist unless ``overwrite``.
    Returns the bag directory.
    """
    import shutil

    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in ("mcap", "sqlite3"):
        raise InputError(f"storage must be mcap or sqlite3, got {storage!r}")
    out = Path(out_dir)
    if out.exists():
        if not overwrite:
            raise InputError(f"{out}: already exists (a bag is written into a new directory)")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ts = typestore()
    M = ts.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    n = 0
    with Writer(out, version=8, storage_plugin=plugin) as w:
        c_col = w.add_connection(color_topic, IMAGE_T, typestore=ts)
        c_dep = w.add_connection(depth_topic, IMAGE_T, typestore=ts)
        c_inf = w.add_connection(info_topic, INFO_T, typestore=ts)
        c_pos = w.add_connection(pose_topic, "geometry_msgs/msg/PoseStamped", typestore=ts)
        for f in frames:
            t = int(f.stamp_ns)
            stamp = M["builtin_interfaces/msg/Time"](sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)
            hdr = M["std_msgs/msg/Header"](stamp=stamp, frame_id=camera_frame)
            H, W = f.height, f.width
            col = M[IMAGE_T](header=hdr, height=H, width=W, encoding="rgb8", is_bigendian=0, step=3 * W,
                             data=np.ascontiguousarray(f.rgb).reshape(-1))
            mm = np.round(f.depth_m.astype(np.float64) * 1000.0)
            mm[(mm > 65535) | (mm < 0)] = 0
            dep = M[IMAGE_T](header=hdr, height=H, width=W, encoding="16UC1", is_bigendian=0, step=2 * W,
                             data=mm.astype("<u2").reshape(-1).view(np.uint8))
            K = f.K
            P = np.zeros((3, 4))
            P[:, :3] = K
            roi = M["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            inf = M[INFO_T](header=hdr, height=H, width=W, distortion_model="plumb_bob", d=np.zeros(5),
                            k=K.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                            binning_x=0, binning_y=0, roi=roi)
            q = R_to_quat(f.T_WC[:3, :3])
            p = f.T_WC[:3, 3]
            pose = M["geometry_msgs/msg/PoseStamped"](
                header=M["std_msgs/msg/Header"](stamp=stamp, frame_id=map_frame),
                pose=M["geometry_msgs/msg/Pose"](
                    position=M["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
                    orientation=M["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                                  w=float(q[3]))))
            for conn, msg in ((c_pos, pose), (c_inf, inf), (c_dep, dep), (c_col, col)):
                w.write(conn, t, ts.serialize_cdr(msg, conn.msgtype))
            n += 1
    log.info("wrote %d frames to %s (%s)", n, out, storage)
    return out


# ----------------------------------------------------------------------------- reading


@dataclass
class BagTopics:
    color: str
    depth: str
    info: str
    pose: str
    pose_type: str


def _open_reader(path: Path):
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        files = sorted(list(path.glob("*.mcap")) + list(path.glob("*.db3")))
        if len(files) == 1:
            path = files[0]
        elif not files:
            raise InputError(f"{path}: not a rosbag2 directory (no metadata.yaml, .mcap or .db3 file)")
        else:
            raise InputError(f"{path}: several storage files and no metadata.yaml; name one of "
                             + ", ".join(f.name for f in files))
    elif path.is_file() and path.suffix not in (".mcap", ".db3", ".bag"):
        raise InputError(f"{path}: not a bag (expected a rosbag2 directory, .mcap or .db3, or a ROS 1 .bag)")
    try:
        r = AnyReader([path], default_typestore=typestore())
        r.open()
    except Exception as e:  # rosbags raises several error types for malformed files
        raise InputError(f"{path}: cannot open bag ({type(e).__name__}: {e})") from None
    return r


def _first_encoding(reader, topic: str) -> str | None:
    conns = [c for c in reader.connections if c.topic == topic]
    for conn, _, raw in reader.messages(connections=conns):
        try:
            return str(reader.deserialize(raw, conn.msgtype).encoding)
        except Exception:
            return None
    return None


def _only_topic(path: Path, enc: dict, encodings, what: str, flag: str) -> str:
    """The single topic whose encoding is in ``encodings``; InputError naming ``--flag`` otherwise."""
    cands = [t for t, e in enc.items() if e in encodings]
    if len(cands) != 1:
        raise InputError(f"{path}: {'no' if not cands else 'several'} {what} "
                         f"({', '.join(cands) or 'none'}); name one with --{flag}")
    return cands[0]


def detect_topics(reader, path: Path, color: str | None = None, depth: str | None = None, info: str | None = None,
                  pose: str | None = None) -> BagTopics:
    """Choose the four topics (named ones are checked, the rest found by type); InputError when ambiguous."""
    types: dict[str, str] = {}
    for c in reader.connections:
        types[c.topic] = c.msgtype
    listing = ", ".join(f"{t} [{ty}]" for t, ty in sorted(types.items())) or "no topics"

    def check(topic, allowed, flag):
        if topic not in types:
            raise InputError(f"{path}: topic {topic} (--{flag}) is not in the bag; it has {listing}")
        if types[topic] not in allowed:
            raise InputError(f"{path}: topic {topic} (--{flag}) is {types[topic]}, expected {' or '.join(allowed)}")
        return topic

    images = sorted(t for t, ty in types.items() if ty == IMAGE_T)
    if color:
        check(color, (IMAGE_T,), "color-topic")
    if depth:
        check(depth, (IMAGE_T,), "depth-topic")
    if not color or not depth:
        if not images:
            raise InputError(f"{path}: no sensor_msgs/Image topics (has {listing})")
        enc = {t: _first_encoding(reader, t) for t in images if t not in (color, depth)}
        color = color or _only_topic(path, enc, COLOR_ENCODINGS, "colour image topics", "color-topic")
        depth = depth or _only_topic(path, enc, DEPTH_ENCODINGS, "depth image topics (16UC1/32FC1)", "depth-topic")
    if info:
        check(info, (INFO_T,), "info-topic")
    else:
        cands = sorted(t for t, ty in types.items() if ty == INFO_T)
        beside = [t for t in cands if t.rsplit("/", 1)[0] == depth.rsplit("/", 1)[0]]
        if len(cands) == 1:
            info = cands[0]
        elif len(beside) == 1:
            info = beside[0]
        else:
            raise InputError(f"{path}: {'no' if not cands else 'several'} sensor_msgs/CameraInfo topics "
                             f"({', '.join(cands) or 'none'}); name one with --info-topic")
    if pose:
        check(pose, POSE_TYPES + (TF_T,), "pose-topic")
    else:
        cands = sorted(t for t, ty in types.items() if ty in POSE_TYPES)
        if not cands and types.get("/tf") == TF_T:
            cands = ["/tf"]
        if len(cands) != 1:
            raise InputError(f"{path}: {'no' if not cands else 'several'} pose topics (PoseStamped, Odometry, "
                             f"TransformStamped) ({', '.join(cands) or 'none'}); name one with --pose-topic")
        pose = cands[0]
    return BagTopics(color=color, depth=depth, info=info, pose=pose, pose_type=types[pose])


class BagSource(FrameSource):
    """Frames from a rosbag2 bag, synchronised by header stamps (see module doc)."""

    fmt = "bag"

    def __init__(self, path: str | Path, color_topic: str | None = None, depth_topic: str | None = None,
                 info_topic: str | None = None, pose_topic: str | None = None, slop_s: float = 0.02,
                 max_pose_gap_s: float = 0.5, depth_mm_scale: float = 0.001, map_frame: str = MAP_FRAME,
                 camera_frame: str | None = None):
        super().__init__(str(path))
        self.map_frame = map_frame
        self.camera_frame = camera_frame
        self.path = Path(path)
        self.slop_s = float(slop_s)
        self.max_pose_gap_s = float(max_pose_gap_s)
        self.depth_mm_scale = float(depth_mm_scale)
        r = _open_reader(self.path)
        try:
            self.topics = detect_topics(r, self.path, color_topic, depth_topic, info_topic, pose_topic)
            self.message_counts: dict[str, int] = {}
            for c in r.connections:
                self.message_counts[c.topic] = self.message_counts.get(c.topic, 0) + c.msgcount
        finally:
            r.close()
        self.sync_stats = SyncStats()
        self._len: int | None = None

    def _sets(self) -> Iterator:
        r = _open_reader(self.path)
        tp = self.topics
        sync = ApproxSync(slop_s=self.slop_s, max_pose_gap_s=self.max_pose_gap_s, max_queue=1000)
        role = {tp.color: "color", tp.depth: "depth", tp.info: "info", tp.pose: "pose"}
        tf = None
        if tp.pose_type == TF_T:
            tf = self._read_tf(r)
            del role[tp.pose]
        conns = [c for c in r.connections if c.topic in role]
        try:
            for conn, _, raw in r.messages(connections=conns):
                kind = role[conn.topic]
                try:
                    msg = r.deserialize(raw, conn.msgtype)
                    t = stamp_to_ns(msg.header.stamp)
                    if kind == "pose":
                        out = sync.add_pose(t, pose_msg_to_T(msg))
                    else:
                        if tf is not None and kind == "depth":
                            cam = self.camera_frame or str(msg.header.frame_id)
                            T = tf.lookup(self.map_frame, cam, t)
                            if T is not None:
                                sync.add_pose(t, T)
                        out = getattr(sync, f"add_{kind}")(t, msg)
                except Exception as e:  # one bad message: skip it, keep the rest
                    self._skip(f"{self.path}: {conn.topic} message", f"{type(e).__name__}: {e}")
                    continue
                yield from out
            yield from sync.flush()
        finally:
            self.sync_stats = sync.stats
            r.close()

    def _read_tf(self, r):
        """All of /tf and /tf_static (the pose topic and its static partner) in a TfBuffer."""
        from neural_mapping.io.tf import TfBuffer

        buf = TfBuffer(max_gap_s=self.max_pose_gap_s)
        tf_topics = {self.topics.pose: False, "/tf_static": True}
        conns = [c for c in r.connections if c.topic in tf_topics and c.msgtype == TF_T]
        for conn, _, raw in r.messages(connections=conns):
            try:
                for tr in r.deserialize(raw, conn.msgtype).transforms:
                    buf.add(str(tr.header.frame_id), str(tr.child_frame_id), stamp_to_ns(tr.header.stamp),
                            pose_msg_to_T(tr), static=tf_topics[conn.topic])
            except Exception as e:  # one bad message: skip it, keep the rest
                self._skip(f"{self.path}: {conn.topic} message", f"{type(e).__name__}: {e}")
        if self.map_frame not in buf.frames():
            raise InputError(f"{self.path}: frame {self.map_frame!r} is not in {self.topics.pose} "
                             f"(frames: {', '.join(sorted(buf.frames())) or 'none'}); name it with --map-frame")
        return buf

    def _frames(self) -> Iterator[Frame]:
        n = 0
        for s in self._sets():
            n += 1
            try:
                f = msgs_to_frame(s.color, s.depth, s.info, s.T_WC, stamp_ns=s.stamp_ns, mm_scale=self.depth_mm_scale)
            except ValueError as e:
                self._skip(f"{self.path}: set at {s.stamp_ns} ns", str(e))
                continue
            yield f
        self._len = n

    @property
    def len_hint(self) -> int:
        """Upper bound of the frame count from the bag's message counts, free (for progress bars)."""
        return min(self.message_counts.get(self.topics.color, 0), self.message_counts.get(self.topics.depth, 0))

    def __len__(self) -> int:
        """Number of synchronised sets: exact, known after one iteration; before it, a first
        call runs the synchroniser over the bag (a full read; see ``len_hint`` for a free bound)."""
        if self._len is None:
            saved = (self.skipped, self.skip_reasons)
            self.skipped, self.skip_reasons = 0, []
            n = sum(1 for _ in self._sets())
            self._len = n
            self.skipped, self.skip_reasons = saved
        return self._len
