"""`neural-mapping play BAG [--rate R] [--loop] [--prefix /r1]`: publish a bag's messages with /clock through rclpy.

For machines without rosbag2 (`ros2 bag play`). Messages are published as the bag's
serialized CDR bytes (no deserialisation), with their bag topics and types, paced by
the bag's receive times divided by --rate; rosgraph_msgs/Clock on /clock carries the bag
time so a node with use_sim_time:=true follows it. Reads rosbag2 (sqlite3, MCAP) and
ROS 1 bags through the `rosbags` library.

``--prefix /r1`` publishes every topic under the prefix (``/camera/pose`` as ``/r1/camera/pose``;
``/tf``, ``/tf_static`` and ``/clock`` as ``/r1/tf``, ``/r1/tf_static``, ``/r1/clock``), so one
machine can play a fleet: each robot's node runs in its namespace (docs/fleet.md). Frame ids inside
the messages are left as they are (the fleet shares one ``map`` frame). ``/tf_static`` is published
transient local, as tf2 latches it; everything else reliable, volatile.
"""

from __future__ import annotations

import importlib
import re
import sys
import time
from pathlib import Path

from neural_mapping.errors import InputError


def add_arguments(p) -> None:
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap) or ROS 1 .bag file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again from the start when the bag ends")
    p.add_argument("--clock-hz", type=float, default=40.0, help="/clock publish rate between messages (0: only at messages)")
    p.add_argument("--topics", nargs="*", default=None, help="only these topics (default: all)")
    p.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds until every topic has a subscriber before starting")
    p.add_argument("--start-delay", type=float, default=0.0, metavar="S", help="sleep S seconds before playing")
    p.add_argument("--prefix", default="", metavar="NS",
                   help="publish every topic, /clock and /tf included, under this namespace (e.g. /r1), so several "
                        "bags can play a fleet on one machine")


def topic_prefix(prefix: str) -> str:
    """'/r1', 'r1' or '/r1/' -> '/r1' ('' for none); InputError unless it is a valid ROS namespace."""
    p = prefix.strip()
    if p in ("", "/"):
        return ""
    p = "/" + p.strip("/")
    if not re.fullmatch(r"(/[A-Za-z_][A-Za-z0-9_]*)+", p):
        raise InputError(f"--prefix {prefix!r} is not a ROS namespace (segments of letters, digits and _, "
                         "each starting with a letter or _)")
    return p


def _msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class, or None when not importable."""
    parts = msgtype.split("/")
    if len(parts) == 2:  # ROS 1 style 'sensor_msgs/Image'
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        return None
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError):
        return None


def _open(path: Path):
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise InputError(f"{path}: no such bag")
    try:
        reader = AnyReader([path])
        reader.open()
    except Exception as e:  # rosbags raises several types for non-bags
        raise InputError(f"{path}: not a readable bag: {e}") from None
    return reader


def run(args) -> int:
    if not args.rate > 0:
        raise InputError(f"--rate must be > 0, got {args.rate}")
    prefix = topic_prefix(args.prefix)
    path = Path(args.bag)
    reader = _open(path)
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    from neural_mapping.ros.convert_out import stamp_from_ns

    conns = [c for c in reader.connections if args.topics is None or c.topic in args.topics]
    if not conns:
        reader.close()
        raise InputError(f"{path}: no messages on the selected topics")
    rclpy.init(args=["--ros-args"])
    node = rclpy.create_node("neural_mapping_play")
    qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {}
    for c in conns:
        if c.topic in pubs:
            continue
        cls = _msg_class(c.msgtype)
        if cls is None:
            print(f"play: skipping {c.topic}: message type {c.msgtype} is not importable", file=sys.stderr)
            continue
        name = prefix + "/" + c.topic.lstrip("/") if prefix else c.topic
        pubs[c.topic] = node.create_publisher(cls, name, latched if c.topic == "/tf_static" else qos)
    clock_pub = node.create_publisher(Clock, prefix + "/clock", 10)
    ros1 = getattr(reader, "is2", True) is False
    n_pub = 0
    try:
        if args.wait_subscribers > 0:
            t_end = time.monotonic() + args.wait_subscribers
            while time.monotonic() < t_end and any(p.get_subscription_count() == 0 for p in pubs.values()):
                time.sleep(0.05)
        if args.start_delay > 0:
            time.sleep(args.start_delay)
        while True:
            t_wall0 = None
            t_bag0 = None
            last_clock = 0.0
            for conn, t_ns, raw in reader.messages(connections=[c for c in conns if c.topic in pubs]):
                if t_wall0 is None:
                    t_wall0, t_bag0 = time.monotonic(), t_ns
                target = t_wall0 + (t_ns - t_bag0) / 1e9 / args.rate
                while True:
                    now = time.monotonic()
                    if now >= target:
                        break
                    if args.clock_hz > 0 and now - last_clock >= 1.0 / args.clock_hz:
                        sim = t_bag0 + int((now - t_wall0) * args.rate * 1e9)
                        clock_pub.publish(Clock(clock=stamp_from_ns(sim)))
                        last_clock = now
                    time.sleep(min(target - now, 0.005))
                clock_pub.publish(Clock(clock=stamp_from_ns(t_ns)))
                data = bytes(raw)
                if ros1:
                    data = bytes(reader.typestore.ros1_to_cdr(raw, conn.msgtype))
                pubs[conn.topic].publish(data)
                n_pub += 1
            if not args.loop:
                break
        time.sleep(0.2)  # let the last messages leave
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"play: published {n_pub} messages on {len(pubs)} topics from {path}"
          + (f" under {prefix}" if prefix else ""))
    return 0
