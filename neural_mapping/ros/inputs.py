"""The node's inputs: subscriptions -> convert -> approximate sync (+ TF pose) -> Frame -> the core's queue.

Callbacks convert and push, never wait for training: a frame goes into the
:class:`~neural_mapping.online.OnlineMapper`'s bounded drop-oldest queue. Malformed messages
are dropped, counted and warned about (throttled); the node keeps mapping.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from neural_mapping.ros import convert
from neural_mapping.ros.sync import ApproxSync, frame_from_synced


def auto_input_max_width(setting: int, device) -> int | None:
    """The node's ``input_max_width`` resolved: None = full resolution; 0 (auto) is 320 on CPU."""
    if setting < 0:
        return None
    if setting == 0:
        return 320 if str(getattr(device, "type", device)) == "cpu" else None
    return int(setting)


class StampGaps:
    """Messages missing from a periodic stream, estimated from its stamps.

    A best-effort subscriber is not told what DDS lost (a 4K rgb8 image is ~25 MB of fragments;
    one lost fragment loses the image). What the node can see: a stamp gap of k median periods
    (k >= 1.5) means about round(k) - 1 messages never arrived. It cannot see messages lost at
    the end of a stream, streams with irregular stamps, or a publisher that skipped them itself.
    """

    def __init__(self, history: int = 16) -> None:
        self.periods: deque = deque(maxlen=history)
        self.last: int | None = None
        self.missing = 0

    def add(self, stamp_ns: int) -> None:
        last, self.last = self.last, stamp_ns if self.last is None else max(self.last, stamp_ns)
        if last is None or stamp_ns <= last:
            return  # first, duplicate or out-of-order stamp: no period
        dt = stamp_ns - last
        if len(self.periods) >= 4:
            med = float(np.median(self.periods))
            if dt > 1.5 * med:
                self.missing += int(round(dt / med)) - 1
                return
        self.periods.append(dt)


class Inputs:
    """Subscriptions of one node feeding its core (see the module doc)."""

    def __init__(self, node, callback_group) -> None:
        n = node.ncfg
        self.node = node
        self.counts: Counter = Counter()  # dropped_malformed, dropped_no_tf
        self.received: Counter = Counter()  # messages per stream (color, depth, info, pose)
        self.gaps = {"color": StampGaps(), "depth": StampGaps()}
        self.T_body_camera = np.asarray(n.T_body_camera, dtype=np.float64).reshape(4, 4)
        #: input frames wider than this are subsampled before queuing (None: full resolution)
        self.max_width = auto_input_max_width(n.input_max_width, node.core.mapper.device)
        node.get_logger().info("input images: " + ("full resolution" if self.max_width is None else
                               f"subsampled by an integer stride to <= {self.max_width} px wide"))
        self.sync = ApproxSync(slop_s=n.sync_slop_s, max_pose_gap_s=max(n.pose_max_gap_s, 1e-3),
                               max_queue=max(4 * n.queue_size, 30))
        self._sync_lock = threading.Lock()
        #: pose of the published rendered view set on ~/render_pose (None: the latest camera's)
        self.render_T_WC: np.ndarray | None = None

        sd = qos_profile_sensor_data  # inputs: sensor-data QoS, names remappable
        sub = node.subscription
        sub(Image, "color/image", lambda m: self._feed("color", m), sd, callback_group=callback_group)
        sub(Image, "depth/image", lambda m: self._feed("depth", m), sd, callback_group=callback_group)
        sub(CameraInfo, "depth/camera_info", lambda m: self._feed("info", m), sd, callback_group=callback_group)
        if n.pose_source == "pose":
            sub(PoseStamped, "pose", lambda m: self._feed("pose", m), sd, callback_group=callback_group)
        elif n.pose_source == "odom":
            sub(Odometry, "odom", lambda m: self._feed("pose", m), sd, callback_group=callback_group)
        else:  # tf (tf2_ros importable: a real ROS install; checked by the node)
            import tf2_ros

            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, node)
        sub(PoseStamped, "~/render_pose", self._on_render_pose, 10, callback_group=callback_group)

    def drop(self, kind: str, msg: str) -> None:
        self.counts[kind] += 1
        self.node.warn(kind, msg)

    def missing_estimated(self) -> int:
        return sum(g.missing for g in self.gaps.values())

    def dropped_no_pose(self) -> int:
        return int(self.sync.stats.dropped_no_pose) + self.counts["dropped_no_tf"]

    def dropped_unsynced(self) -> int:
        st = self.sync.stats
        return int(st.dropped_color + st.dropped_depth + st.dropped_overflow)

    # ------------------------------------------------------------------ callbacks

    def _feed(self, stream: str, msg) -> None:
        """Convert one message, push it into the synchroniser and queue every frame it completes."""
        try:
            stamp_ns = convert.stamp_to_ns(msg.header.stamp)
            self.received[stream] += 1
            if stream in self.gaps:
                self.gaps[stream].add(stamp_ns)
            if stream == "color":
                data = convert.image_to_rgb(msg)
            elif stream == "depth":
                data = convert.image_to_depth_m(msg)
            elif stream == "info":
                data = (convert.camera_info_to_K(msg), convert.camera_info_size(msg))
            else:
                data = convert.pose_msg_to_T(msg) @ self.T_body_camera
        except (ValueError, TypeError, AttributeError) as e:
            self.drop("dropped_malformed", f"dropped a malformed {stream} message: {e}")
            return
        if stream == "depth" and not self.received["info"]:  # sets wait for one (ApproxSync): say why
            self.node.warn("waiting_for_camera_info", f"{self.received['depth']} depth images received but no "
                           "camera_info yet (depth/camera_info): their RGB-D sets wait, the oldest are dropped")
        if stream == "depth" and self.node.ncfg.pose_source == "tf":
            self._feed_tf_pose(msg, stamp_ns)
        with self._sync_lock:
            sets = getattr(self.sync, f"add_{stream}")(stamp_ns, data)
        self._enqueue(sets)

    def _feed_tf_pose(self, depth_msg, stamp_ns: int) -> None:
        """pose_source 'tf': T_map_camera at the depth stamp from the TF tree (needs tf2_ros)."""
        import tf2_ros
        from rclpy.duration import Duration
        from rclpy.time import Time

        map_frame = self.node.ncfg.map_frame
        camera = self.node.ncfg.camera_frame or depth_msg.header.frame_id
        try:
            tf = self.tf_buffer.lookup_transform(map_frame, camera, Time(nanoseconds=stamp_ns),
                                                 timeout=Duration(seconds=0.05))
            T = convert.pose_msg_to_T(tf) @ self.T_body_camera
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException) as e:
            self.drop("dropped_no_tf", f"no transform {map_frame} <- {camera} at the depth stamp: {e}")
            return
        except ValueError as e:
            self.drop("dropped_malformed", f"dropped a malformed transform: {e}")
            return
        with self._sync_lock:
            sets = self.sync.add_pose(stamp_ns, T)
        self._enqueue(sets)

    def _enqueue(self, sets) -> None:
        for s in sets:
            try:
                frame = frame_from_synced(s, self.max_width)
            except ValueError as e:
                self.drop("dropped_malformed", f"dropped an RGB-D set: {e}")
                continue
            if self.node.core.put(frame):
                self.node.warn("dropped_queue_full",
                               "frame queue full: dropped the oldest frame (training is slower than input)")

    def _on_render_pose(self, msg) -> None:
        from neural_mapping.ros import convert_out as co

        map_frame = self.node.ncfg.map_frame
        try:
            T = co.pose_to_T(msg.pose)
        except ValueError as e:
            self.drop("dropped_malformed", f"dropped a malformed render_pose: {e}")
            return
        if msg.header.frame_id and msg.header.frame_id != map_frame:
            self.drop("dropped_malformed", f"render_pose must be in {map_frame!r}, got {msg.header.frame_id!r}")
            return
        self.render_T_WC = T
