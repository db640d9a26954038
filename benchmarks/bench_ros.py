"""ROS node benchmarks: print figures and the ratio to each target (no assertions).

  1. message -> Frame for a 640x480 RGB-D pair (the node's conversion path), target <= 2 ms
  2. the node's frame queue at 30 Hz input of 640x480 RGB-D (real DDS), target: never grows
  3. ~/query_field with 100 k points, end to end over DDS, target <= 0.5 s
  4. mesh publish after a change (extract + Marker + serialise) at the cpu preset, target <= 1 s

Usage: .venv/bin/python benchmarks/bench_ros.py [--seconds 20] [--skip-node]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def line(name, value, unit, target=None, lower_is_better=True):
    extra = ""
    if target is not None:
        ok = value <= target if lower_is_better else value >= target
        extra = f"  (target {'<=' if lower_is_better else '>='} {target} {unit}: {'met' if ok else 'NOT met'}, ratio {value / target:.2f})"
    print(f"{name:<58} {value:10.3f} {unit}{extra}", flush=True)


def bench_convert(n: int = 200) -> None:
    from sensor_msgs.msg import Image

    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.ros import convert
    from neural_mapping.ros import convert_out as co
    from neural_mapping.ros.node import frame_from_synced
    from neural_mapping.ros.sync import SyncedSet

    f = synthetic_sequence(n_frames=1, width=640, height=480).frames[0]
    color = co.rgb_to_image(f.rgb, "cam", f.stamp_ns)
    mm = np.round(f.depth_m * 1000).astype("<u2")
    depth16 = Image(header=co.make_header("cam", f.stamp_ns), height=480, width=640, encoding="16UC1", step=1280,
                    data=mm.tobytes())
    depth32 = co.depth_to_image(f.depth_m, "cam", f.stamp_ns)
    info = co.camera_info_msg(f.K, 480, 640, "cam", f.stamp_ns)
    for name, dmsg in (("16UC1", depth16), ("32FC1", depth32)):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            rgb = convert.image_to_rgb(color)
            d = convert.image_to_depth_m(dmsg)
            K = (convert.camera_info_to_K(info), convert.camera_info_size(info))
            frame_from_synced(SyncedSet(stamp_ns=f.stamp_ns, color=rgb, depth=d, info=K, T_WC=f.T_WC))
            ts.append(time.perf_counter() - t0)
        line(f"msg -> Frame, 640x480 rgb8 + {name} (median of {n})", 1e3 * statistics.median(ts), "ms", 2.0)


def bench_mesh(train_s: float = 20.0) -> None:
    from rclpy.serialization import serialize_message

    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper
    from neural_mapping.products import MeshExtractor
    from neural_mapping.ros import convert_out as co

    seq = synthetic_sequence(n_frames=30, width=320, height=240)
    m = Mapper(preset("cpu"))
    for f in seq.frames:
        m.add_frame(f)
    steps = m.train_for(train_s)
    print(f"mesh: cpu preset, 30 frames 320x240, trained {steps} steps in {train_s:.0f} s")
    for voxel in (m.cfg.mesh.voxel_m, 0.05, 0.1):
        t0 = time.perf_counter()
        mesh = MeshExtractor(m, voxel_m=voxel).extract(full=True)
        t1 = time.perf_counter()
        data = co.mesh_to_marker_cdr(mesh, "map")  # what the node publishes
        t2 = time.perf_counter()
        msg = co.mesh_to_marker(mesh, "map")
        t3 = time.perf_counter()
        serialize_message(msg)
        t4 = time.perf_counter()
        print(f"  voxel {voxel:.3f} m: {len(mesh.triangles)} triangles, extract {t1 - t0:.2f} s, Marker bytes "
              f"{t2 - t1:.2f} s ({len(data) / 1e6:.1f} MB) [through Python objects: {t3 - t2:.2f} s + serialise "
              f"{t4 - t3:.2f} s]")
        line(f"mesh publish after a change, voxel {voxel:.3f} m", t2 - t0, "s", 1.0)


def bench_node(seconds: float) -> None:
    """Node subprocess, cpu preset: 640x480 at 30 Hz for `seconds`, then query_field with 100 k points."""
    from geometry_msgs.msg import Point
    from neural_mapping_interfaces.srv import QueryField

    from neural_mapping.io.synthetic import synthetic_sequence
    from ros_harness import Client, NodeProcess, frame_messages, status_of

    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    # 640x480 images are > 512 KB: use the shared-memory profile in both processes (see the XML)
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_messages.xml"))
    print(f"node: FASTRTPS_DEFAULT_PROFILES_FILE={os.environ['FASTRTPS_DEFAULT_PROFILES_FILE']}")
    seq = synthetic_sequence(n_frames=30, width=640, height=480, fps=30.0)
    msgs = [frame_messages(f, depth_16uc1=True) for f in seq.frames]
    log = Path("/tmp") / f"bench_ros_node_{os.getpid()}.log"
    params = {"preset": "cpu", "status_rate_hz": 5.0, "mesh_rate_hz": 0.5, "occupancy_rate_hz": 0.5,
              "voxels_rate_hz": 0.2, "esdf_rate_hz": 0.5, "render_rate_hz": 0.2, "map_dir": "/tmp/bench_ros_maps"}
    proc = NodeProcess(params, dict(os.environ), log)
    client = Client()
    try:
        client.wait_subscribed(timeout=60)
        period = 1.0 / 30.0
        t_start = time.monotonic()
        i = 0
        qlen = []
        next_t = t_start
        period_ns = int(round(1e9 / 30.0))
        while time.monotonic() - t_start < seconds:
            k = i % len(msgs)
            stamp = seq.frames[0].stamp_ns + i * period_ns
            color, depth, info, pose = msgs[k]
            for m in (color, depth, info, pose):
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            client.pub_pose.publish(pose)
            client.pub_info.publish(info)
            client.pub_color.publish(color)
            client.pub_depth.publish(depth)
            i += 1
            st = status_of(client)
            if st is not None:
                qlen.append(st.queue_length)
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        sent_s = time.monotonic() - t_start
        time.sleep(1.0)
        st = status_of(client)
        print(f"node: sent {i} RGB-D sets in {sent_s:.1f} s ({i / sent_s:.1f} Hz), received {st.frames_received}, "
              f"added {st.frames_added}, rejected {st.frames_rejected}, steps {st.steps} ({st.steps_per_s:.2f}/s), products {st.products_s}")
        print(f"  queue length seen in ~/status: max {max(qlen) if qlen else 0}, final {st.queue_length} "
              f"(capacity 8); dropped: queue_full {st.dropped_queue_full}, unsynced {st.dropped_unsynced}, "
              f"no_pose {st.dropped_no_pose}, malformed {st.dropped_malformed}")
        line("queue: largest length at 30 Hz input (bounded by queue_size 8)", float(max(qlen) if qlen else 0), "frames", 8.0)
        # query_field, 100 k points inside the room
        rng = np.random.default_rng(0)
        pts = rng.uniform([-2.4, -1.9, 0.1], [2.4, 1.9, 2.5], size=(100_000, 3))
        from std_srvs.srv import SetBool

        def query_3x(label):
            times, build = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                req = QueryField.Request(points=[Point(x=x, y=y, z=z) for x, y, z in pts.tolist()])
                t1 = time.perf_counter()
                r = client.call(QueryField, "query_field", req, timeout=120)
                t2 = time.perf_counter()
                assert r.success and len(r.sdf) == len(pts), r.message
                build.append(t1 - t0)
                times.append(t2 - t1)
                print(f"  query_field: {r.message}")
            print(f"  request building in the client {1e3 * statistics.median(build):.0f} ms (not counted)")
            line(f"query_field 100 k points, call -> response, {label} (median of 3)", statistics.median(times), "s", 0.5)

        query_3x("while training")
        client.call(SetBool, "pause", SetBool.Request(data=True))
        query_3x("paused")
    finally:
        client.close()
        proc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="30 Hz input duration for the node run")
    ap.add_argument("--skip-node", action="store_true", help="only the in-process benchmarks")
    ap.add_argument("--mesh-train-seconds", type=float, default=20.0)
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    bench_convert()
    if not args.skip_node:
        bench_node(args.seconds)
    bench_mesh(args.mesh_train_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
