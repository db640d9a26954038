"""`neural-mapping play`: a bag's messages and /clock published through rclpy; the node follows sim time."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ros_harness import Client, NodeProcess, status_of

REPO = Path(__file__).resolve().parents[1]
N = 6


def play_cmd(*args):
    exe = REPO / ".venv" / "bin" / "neural-mapping"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "neural_mapping.cli"]
    return base + ["play", *map(str, args)]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    from neural_mapping.io.bag import write_bag
    from neural_mapping.io.synthetic import synthetic_sequence

    seq = synthetic_sequence(n_frames=N, width=64, height=48, fps=10.0)
    return write_bag(seq.frames, tmp_path_factory.mktemp("bag") / "room"), seq


def test_play_publishes_every_message_and_clock(ros_env, bag):
    import rclpy
    import rclpy.executors
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from neural_mapping.ros import convert

    path, seq = bag
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("play_probe", context=ctx)
    got = {"color": [], "depth": [], "pose": [], "clock": []}
    lock = threading.Lock()

    def keep(k):
        def cb(m):
            with lock:
                got[k].append(m)
        return cb

    rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/camera/color/image_raw", keep("color"), rel)
    node.create_subscription(Image, "/camera/depth/image_raw", keep("depth"), rel)
    node.create_subscription(PoseStamped, "/camera/pose", keep("pose"), rel)
    node.create_subscription(Clock, "/clock", keep("clock"), rel)
    stop = threading.Event()
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)

    def spin():
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        r = subprocess.run(play_cmd(path, "--rate", "4", "--wait-subscribers", "20"), env=ros_env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"published {4 * N} messages on 4 topics" in r.stdout
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and len(got["color"]) < N:
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(timeout=5)
        ex.shutdown()
        node.destroy_node()
        ctx.try_shutdown()
    assert len(got["color"]) == N and len(got["depth"]) == N and len(got["pose"]) == N
    for msg, f in zip(got["color"], seq.frames):
        np.testing.assert_array_equal(convert.image_to_rgb(msg), f.rgb)
        assert convert.stamp_to_ns(msg.header.stamp) == f.stamp_ns
    for msg, f in zip(got["depth"], seq.frames):
        np.testing.assert_allclose(convert.image_to_depth_m(msg), f.depth_m, atol=0.0006)
    clock = [convert.stamp_to_ns(c.clock) for c in got["clock"]]
    assert clock == sorted(clock) and clock[0] >= seq.frames[0].stamp_ns and clock[-1] == seq.frames[-1].stamp_ns


def test_node_maps_a_played_bag_in_sim_time(ros_env, bag, tmp_path):
    """use_sim_time:=true with remapped input topics, driven by `neural-mapping play`."""
    path, seq = bag
    remaps = {"color/image": "/camera/color/image_raw", "depth/image": "/camera/depth/image_raw",
              "depth/camera_info": "/camera/depth/camera_info", "pose": "/camera/pose"}
    params = {"use_sim_time": True, "encoding.hash_log2_table": 12, "train.rays_per_step": 256,
              "map_dir": str(tmp_path), "status_rate_hz": 5.0, "mesh_rate_hz": 0.0, "occupancy_rate_hz": 0.0,
              "voxels_rate_hz": 0.0, "esdf_rate_hz": 0.0, "render_rate_hz": 0.0}
    proc = NodeProcess(params, ros_env, tmp_path / "node.log", remaps=remaps)
    client = None
    try:
        client = Client()
        client.wait_for(lambda: any(n == "/neural_mapper/query_field" for n, _ in client.node.get_service_names_and_types()),
                        60, "the node's services", proc)
        r = subprocess.run(play_cmd(path, "--rate", "1", "--wait-subscribers", "20"), env=ros_env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # sensor inputs are best effort: under heavy load a message may be lost, so one frame may be missing
        st = client.wait_for(lambda: (lambda s: s if s and s.frames_added >= N - 1 else None)(status_of(client)), 60,
                             f"{N - 1}+ frames mapped from the bag", proc)
        assert st.dropped_malformed == 0 and st.dropped_no_pose == 0
        # the node's clock is the bag's: ~/status is stamped in 2023 (bag time), not now
        msg = client.get("status")
        t = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert seq.frames[0].stamp_ns <= t <= seq.frames[-1].stamp_ns + 1_000_000_000
    finally:
        if client is not None:
            client.close()
        proc.stop()


def test_play_refuses_bad_input(tmp_path, ros_env):
    r = subprocess.run(play_cmd(tmp_path / "nope"), env=ros_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such bag" in r.stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("not: a bag\n")
    r = subprocess.run(play_cmd(tmp_path / "junk"), env=ros_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a readable bag" in r.stderr


def test_play_prefix_puts_every_topic_and_clock_under_the_namespace(ros_env, bag):
    """`play --prefix /r1`: /r1/camera/..., /r1/clock; nothing on the bag's own topics or /clock."""
    import rclpy
    import rclpy.executors
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image

    from neural_mapping.ros import convert

    path, seq = bag
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("play_prefix_probe", context=ctx)
    got: dict[str, list] = {}
    lock = threading.Lock()

    def keep(k):
        def cb(m):
            with lock:
                got.setdefault(k, []).append(m)
        return cb

    rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for topic, cls in [("/camera/color/image_raw", Image), ("/camera/depth/image_raw", Image),
                       ("/camera/depth/camera_info", CameraInfo), ("/camera/pose", PoseStamped), ("/clock", Clock)]:
        node.create_subscription(cls, "/r1" + topic, keep("/r1" + topic), rel)
        node.create_subscription(cls, topic, keep(topic), rel)
    stop = threading.Event()
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)

    def spin():
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        r = subprocess.run(play_cmd(path, "--rate", "4", "--wait-subscribers", "20", "--prefix", "r1/"), env=ros_env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"published {4 * N} messages on 4 topics from {path} under /r1" in r.stdout
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and len(got.get("/r1/camera/pose", [])) < N:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        th.join(timeout=5)
        ex.shutdown()
        node.destroy_node()
        ctx.try_shutdown()
    for topic in ["/camera/color/image_raw", "/camera/depth/image_raw", "/camera/depth/camera_info", "/camera/pose"]:
        assert len(got.get("/r1" + topic, [])) == N, topic
        assert topic not in got, f"{topic} was published without the prefix"
    assert "/clock" not in got and got["/r1/clock"][-1].clock == got["/r1/camera/pose"][-1].header.stamp
    for msg, f in zip(got["/r1/camera/pose"], seq.frames):
        assert convert.stamp_to_ns(msg.header.stamp) == f.stamp_ns
        assert msg.header.frame_id == "map"  # frame ids are left as they are: the fleet's shared map frame
    r = subprocess.run(play_cmd(path, "--prefix", "/r-1"), env=ros_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a ROS namespace" in r.stderr
