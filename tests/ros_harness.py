"""Helpers of the ROS tests: run the node as a subprocess, publish frames, wait for messages.

Real rclpy over DDS between two processes; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NODE_EXE = REPO / ".venv" / "bin" / "mapper_node"


def node_command(params: dict, remaps: dict | None = None) -> list[str]:
    exe = str(NODE_EXE) if NODE_EXE.exists() else None
    cmd = [exe] if exe else [sys.executable, "-m", "neural_mapping.ros.node"]
    cmd += ["--ros-args", "--log-level", "neural_mapper:=info"]
    for a, b in (remaps or {}).items():
        cmd += ["-r", f"{a}:={b}"]
    for k, v in params.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            v = "[" + ",".join(repr(float(x)) for x in v) + "]"
        cmd += ["-p", f"{k}:={v}"]
    return cmd


class NodeProcess:
    """The mapper node as a subprocess; output collected in a log file."""

    def __init__(self, params: dict, env: dict, log_path: Path, remaps: dict | None = None):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(node_command(params, remaps), env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def frame_messages(frame, frame_id: str = "camera", depth_16uc1: bool = False):
    """Frame -> (color Image, depth Image, CameraInfo, PoseStamped) stamped at frame.stamp_ns."""
    from geometry_msgs.msg import PoseStamped

    from neural_mapping.ros import convert_out as co

    H, W = frame.depth_m.shape
    color = co.rgb_to_image(frame.rgb, frame_id, frame.stamp_ns)
    if depth_16uc1:
        from sensor_msgs.msg import Image

        mm = np.round(frame.depth_m * 1000.0).astype("<u2")
        depth = Image(header=co.make_header(frame_id, frame.stamp_ns), height=H, width=W, encoding="16UC1",
                      is_bigendian=0, step=2 * W, data=mm.tobytes())
    else:
        depth = co.depth_to_image(frame.depth_m, frame_id, frame.stamp_ns)
    info = co.camera_info_msg(frame.K, H, W, frame_id, frame.stamp_ns)
    pose = PoseStamped(header=co.make_header("map", frame.stamp_ns), pose=co.T_to_pose(frame.T_WC))
    return color, depth, info, pose


class Client:
    """A test-side rclpy node spinning in a thread: publishers to the node's inputs,
    latest message per product topic, service calls with timeouts."""

    def __init__(self, ns: str = "/neural_mapper", node_ns: str = ""):
        """``ns``: the node's namespace and name (its products and status); ``node_ns``: this client's own
        namespace, so its relative input topics reach a node in that namespace (``/r1/color/image``)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import OccupancyGrid
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from visualization_msgs.msg import Marker

        self.ns = ns
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("ros_test_client", context=self.context, namespace=node_ns or None)
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_color = self.node.create_publisher(Image, "color/image", rel)
        self.pub_depth = self.node.create_publisher(Image, "depth/image", rel)
        self.pub_info = self.node.create_publisher(CameraInfo, "depth/camera_info", rel)
        self.pub_pose = self.node.create_publisher(PoseStamped, "pose", rel)
        self.pub_render_pose = self.node.create_publisher(PoseStamped, f"{ns}/render_pose", 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.latest: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        for topic, cls, qos in [("mesh", Marker, latched), ("occupancy", OccupancyGrid, latched),
                                ("occupied_voxels", PointCloud2, latched), ("esdf_slice", PointCloud2, latched),
                                ("rendered/color", Image, latched), ("rendered/depth", Image, latched),
                                ("rendered/camera_info", CameraInfo, latched), ("status", DiagnosticArray, 10)]:
            self.node.create_subscription(cls, f"{ns}/{topic}", self._keeper(topic), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._keeper("diagnostics"), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if not self._running:
                    return
                raise

    def _keeper(self, topic: str):
        def cb(msg):
            with self._lock:
                self.latest[topic] = msg
                self.counts[topic] = self.counts.get(topic, 0) + 1
        return cb

    def get(self, topic: str):
        with self._lock:
            return self.latest.get(topic)

    def wait_for(self, pred, timeout: float, what: str, proc: NodeProcess | None = None, poll: float = 0.1):
        """Wait until pred() is truthy; its value. AssertionError naming `what` (and the node log) on timeout."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            v = pred()
            if v:
                return v
            if proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"node exited ({proc.proc.returncode}) while waiting for {what}:\n{proc.log()[-4000:]}")
            time.sleep(poll)
        log = proc.log()[-4000:] if proc is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log}")

    def wait_for_service(self, srv_type, name: str, timeout: float = 20.0):
        cli = self.node.create_client(srv_type, f"{self.ns}/{name}")
        if not cli.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {self.ns}/{name} did not appear within {timeout} s")
        return cli

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        return self.call_client(self.wait_for_service(srv_type, name), request, timeout, name)

    def call_client(self, cli, request, timeout: float = 30.0, name: str = "the service"):
        fut = cli.call_async(request)
        t_end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < t_end:
            time.sleep(0.01)
        if not fut.done():
            raise AssertionError(f"service {name} did not answer within {timeout} s")
        return fut.result()

    def publish_frame(self, frame, depth_16uc1: bool = False) -> None:
        color, depth, info, pose = frame_messages(frame, depth_16uc1=depth_16uc1)
        self.pub_pose.publish(pose)
        self.pub_info.publish(info)
        self.pub_color.publish(color)
        self.pub_depth.publish(depth)

    def publish_frames_acked(self, frames, depth_16uc1=lambda i: False, tries: int = 4, wait_s: float = 2.0) -> None:
        """Publish frames one at a time, each until ~/status shows the node synchronised it.

        Inputs use sensor-data (best-effort) QoS, so a busy node may lose a message; tests that
        need every frame re-send a lost one (the same stamps) instead of depending on timing.
        """
        for i, f in enumerate(frames):
            st = status_of(self)
            before = st.frames_received if st else 0
            for _ in range(tries):
                self.publish_frame(f, depth_16uc1=depth_16uc1(i))
                t_end = time.monotonic() + wait_s
                while time.monotonic() < t_end:
                    st = status_of(self)
                    if st and st.frames_received > before:
                        break
                    time.sleep(0.05)
                else:
                    continue
                break
            else:
                raise AssertionError(f"frame {i} was not received by the node after {tries} tries")

    def wait_subscribed(self, timeout: float = 20.0) -> None:
        pubs = [self.pub_color, self.pub_depth, self.pub_info, self.pub_pose]
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if all(p.get_subscription_count() > 0 for p in pubs):
                return
            time.sleep(0.05)
        raise AssertionError("the node did not subscribe to the input topics")

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def status_of(client: Client):
    from neural_mapping.ros.convert_out import diagnostics_to_status

    msg = client.get("status")
    return diagnostics_to_status(msg) if msg is not None else None


@contextlib.contextmanager
def running_node(params: dict, log_path):
    """A node process with ``params`` on a random, localhost-only ROS domain and a client that has seen
    it subscribe and publish its first ~/status: yields (NodeProcess, Client); both closed after."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(random.randint(1, 200)))
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        mp.setenv("ROS_LOCALHOST_ONLY", "1")
        proc = NodeProcess(params, dict(os.environ), log_path)
        client = None
        try:
            client = Client()
            client.wait_subscribed(timeout=60)
            client.wait_for(lambda: status_of(client), 30, "the first ~/status", proc)
            yield proc, client
        finally:
            if client is not None:
                client.close()
            proc.stop()
