"""ROS node benchmarks: print figures and the ratio to each target (no assertions).

  1. message -> Frame for a 640x480 RGB-D pair (the node's conversion path), target <= 2 ms
  2. 30 Hz input of RGB-D over real DDS (Fast DDS, shared-memory profile): sets published, received by a
     bare subscriber (the DDS/publisher ceiling), received / dropped (why) / queued / added and training
     steps of the node at 320x240, 640x480 full resolution and 640x480 with the default input_max_width;
     ratios to 320x240. Target: the queue never grows (bounded) and the node receives what is sent
  3. ~/query_field with 100 k points, end to end over DDS from a Python client (with Point messages, and
     with numpy arrays through ros/fastpath.use_arrays), sdf only and with gradients, while training and
     paused, target <= 0.5 s
  4. mesh publish after a change (the node's kept extractor, extract(full=False) + Marker bytes) at the
     cpu preset, target <= 1 s, against a fresh full extraction

Usage: .venv/bin/python benchmarks/bench_ros.py [--seconds 20] [--skip-node] [--no-full-res] [--mesh-train-steps 300]
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
    from neural_mapping.ros.sync import SyncedSet, frame_from_synced

    f = synthetic_sequence(n_frames=1, width=640, height=480).frames[0]
    color = co.rgb_to_image(f.rgb, "cam", f.stamp_ns)
    mm = np.round(f.depth_m * 1000).astype("<u2")
    depth16 = Image(header=co.make_header("cam", f.stamp_ns), height=480, width=640, encoding="16UC1", step=1280,
                    data=mm.tobytes())
    depth32 = co.depth_to_image(f.depth_m, "cam", f.stamp_ns)
    info = co.camera_info_msg(f.K, 480, 640, "cam", f.stamp_ns)
    for name, dmsg, max_w in (("16UC1", depth16, None), ("32FC1", depth32, None), ("16UC1 -> 320x240", depth16, 320)):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            rgb = convert.image_to_rgb(color)
            d = convert.image_to_depth_m(dmsg)
            K = (convert.camera_info_to_K(info), convert.camera_info_size(info))
            frame_from_synced(SyncedSet(stamp_ns=f.stamp_ns, color=rgb, depth=d, info=K, T_WC=f.T_WC), max_w)
            ts.append(time.perf_counter() - t0)
        line(f"msg -> Frame, 640x480 rgb8 + {name} (median of {n})", 1e3 * statistics.median(ts), "ms", 2.0)


def bench_mesh(train_steps: int = 300, change_steps: int = 25) -> None:
    """Mesh publish at the cpu preset as the node does it: the products' copy of the map refreshed in
    place (weights + coverage with its update stamps) and one MeshExtractor kept on it,
    ``extract(full=False, budget_s=mesh_budget_s)`` after a change (2 new frames + ``change_steps``
    steps, about one 5 s mesh period of the node), then the updates until no tile is pending, against a fresh extractor's ``extract(full=True)`` on the same copy
    (what the node did before) in the same process."""
    import copy

    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper
    from neural_mapping.products import MeshExtractor
    from neural_mapping.ros import fastpath
    from neural_mapping.ros.params import NodeConfig

    seq = synthetic_sequence(n_frames=30, width=320, height=240)
    m = Mapper(preset("cpu"))
    for f in seq.frames[:24]:
        m.add_frame(f)
    t0 = time.perf_counter()
    m.step(train_steps)
    print(f"mesh: cpu preset, 24 frames 320x240, {train_steps} steps ({time.perf_counter() - t0:.0f} s); "
          f"a change = 2 more frames + {change_steps} steps")
    snap = Mapper.from_state_dict(m.state_dict(include_coverage=False), coverage=copy.deepcopy(m.coverage))
    voxels = (m.cfg.mesh.voxel_m, 0.05, 0.1)
    budget = NodeConfig().mesh_budget_s or None  # the node's default time budget of a mesh update
    kept = {v: MeshExtractor(snap, voxel_m=v, snapshot=False) for v in voxels}
    for v in voxels:
        kept[v].extract(full=True)  # the node's first publish (not counted)
    for k, frames in enumerate((seq.frames[24:26], seq.frames[26:28])):
        for f in frames:
            m.add_frame(f)
        m.step(change_steps)
        t0 = time.perf_counter()
        with m.lock:
            sd, cov = m.state_dict(include_coverage=False), copy.deepcopy(m.coverage)
        t1 = time.perf_counter()
        snap.load_state_dict(sd, coverage=cov)  # same config: modules reused
        t_snap = time.perf_counter() - t0
        print(f"  change {k + 1}: {m.stats.steps} steps, {m.stats.frames_added} frames; copy refreshed in "
              f"{1e3 * t_snap:.0f} ms ({1e3 * (t1 - t0):.0f} ms under the lock)")
        for v in voxels:
            t0 = time.perf_counter()
            full = MeshExtractor(snap, voxel_m=v, snapshot=False).extract(full=True)
            t1 = time.perf_counter()
            mesh = kept[v].extract(full=False, budget_s=budget)
            t2 = time.perf_counter()
            data = fastpath.mesh_to_marker_cdr(mesh, "map")  # what the node publishes
            t3 = time.perf_counter()
            st = kept[v].stats
            total = t_snap + (t3 - t1)
            print(f"    voxel {v:.3f} m: fresh extractor full {t1 - t0:.2f} s ({len(full.triangles)} triangles); "
                  f"kept extractor incremental (budget {budget} s) {t2 - t1:.2f} s ({st.tiles_recomputed}/"
                  f"{st.tiles_total} tiles recomputed, {st.tiles_pending} pending, {st.points_probed} probe "
                  f"points, {len(mesh.triangles)} triangles), Marker bytes {t3 - t2:.2f} s "
                  f"({len(data) / 1e6:.1f} MB); ratio (copy + incremental + bytes) / full "
                  f"{total / max(t1 - t0, 1e-9):.2f}")
            line(f"mesh publish after change {k + 1}, voxel {v:.3f} m", total, "s", 1.0)
            n, t0 = 1, time.perf_counter()
            while kept[v].stats.tiles_pending:  # the node's next publishes, until the mesh caught up
                kept[v].extract(full=False, budget_s=budget)
                n += 1
            print(f"      caught up with the field after {n} updates ({t2 - t1 + time.perf_counter() - t0:.2f} s "
                  f"of extraction in all)")


def bench_input_quality(steps_per_frame: int = 10, extra_steps: int = 150) -> None:
    """What subsampling 640x480 input to 320x240 (the node's default on CPU) costs in map accuracy:
    the cpu preset trained on the same 15 frames at full resolution and subsampled (frame_from_synced,
    as the node does), |sdf| at 20 k surface points of 5 held-out frames; add_frame CPU time."""
    import torch

    from neural_mapping.camera import backproject_depth
    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper
    from neural_mapping.ros.sync import SyncedSet, frame_from_synced

    torch.manual_seed(0)
    seq = synthetic_sequence(n_frames=30, width=640, height=480, fps=30.0)
    train, held = seq.frames[0:30:2], seq.frames[1:30:6]
    P = np.vstack([backproject_depth(f.depth_m, f.K, f.T_WC, stride=4) for f in held])
    P = P[np.random.default_rng(0).choice(len(P), 20000, replace=False)]

    def as_node(f, max_w):
        return frame_from_synced(SyncedSet(stamp_ns=f.stamp_ns, color=f.rgb, depth=f.depth_m,
                                           info=(f.K, (f.width, f.height)), T_WC=f.T_WC), max_w)

    res = {}
    for name, max_w in (("full 640x480", None), ("subsampled 320x240", 320)):
        m = Mapper(preset("cpu"))
        t_add = 0.0
        for f in train:
            g = as_node(f, max_w)
            t0 = time.process_time()
            m.add_frame(g)
            t_add += time.process_time() - t0
            m.step(steps_per_frame)
        m.step(extra_steps)
        err = np.abs(m.query(P).sdf)
        res[name] = (t_add / len(train), float(err.mean()))
        print(f"input quality, {name}: add_frame CPU {1e3 * t_add / len(train):.0f} ms/frame, {m.stats.steps} steps, "
              f"|sdf| at held-out surface points mean {100 * err.mean():.2f} cm, median {100 * np.median(err):.2f} cm, "
              f"p90 {100 * np.quantile(err, 0.9):.2f} cm", flush=True)
    (a_f, e_f), (a_s, e_s) = res["full 640x480"], res["subsampled 320x240"]
    print(f"input quality: subsampled / full: add_frame CPU {a_s / a_f:.2f}x, mean |sdf| {e_s / e_f:.2f}x")


def _ros_env() -> None:
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 200)))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # 640x480 images are > 512 KB: use the shared-memory profile in every process (see the XML)
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_messages.xml"))


def bare_subscriber(seconds: float) -> int:
    """Subprocess mode: a bare rclpy subscriber to the node's input topics (sensor-data QoS, callbacks
    only count); prints the counts as one JSON line. What DDS and the publisher deliver without the node."""
    import json

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    rclpy.init()
    node = rclpy.create_node("bench_bare_subscriber")
    counts = {"color": 0, "depth": 0, "info": 0, "pose": 0}

    def counter(k):
        def cb(_msg):
            counts[k] += 1
        return cb

    for cls, topic, k in ((Image, "color/image", "color"), (Image, "depth/image", "depth"),
                          (CameraInfo, "depth/camera_info", "info"), (PoseStamped, "pose", "pose")):
        node.create_subscription(cls, topic, counter(k), qos_profile_sensor_data)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("BARE " + json.dumps(counts), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _publish_at_30hz(client, msgs, stamp0: int, seconds: float, on_tick=None) -> tuple[int, float]:
    """Publish RGB-D sets (pose, info, colour, depth) at 30 Hz, paced on the monotonic clock."""
    period_ns = int(round(1e9 / 30.0))
    t_start = time.monotonic()
    next_t, i = t_start, 0
    while time.monotonic() - t_start < seconds:
        stamp = stamp0 + i * period_ns
        color, depth, info, pose = msgs[i % len(msgs)]
        for m in (color, depth, info, pose):
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        client.pub_pose.publish(pose)
        client.pub_info.publish(info)
        client.pub_color.publish(color)
        client.pub_depth.publish(depth)
        i += 1
        if on_tick is not None:
            on_tick()
        next_t += 1.0 / 30.0
        time.sleep(max(0.0, next_t - time.monotonic()))
    return i, time.monotonic() - t_start


def _messages(W: int, H: int):
    from neural_mapping.io.synthetic import synthetic_sequence
    from ros_harness import frame_messages

    seq = synthetic_sequence(n_frames=30, width=W, height=H, fps=30.0)
    return [frame_messages(f, depth_16uc1=True) for f in seq.frames], seq.frames[0].stamp_ns


def bench_bare(W: int, H: int, seconds: float) -> dict:
    """Sets a bare subscriber process receives at 30 Hz (the DDS / publisher ceiling, no node)."""
    import json
    import subprocess

    from ros_harness import Client

    msgs, stamp0 = _messages(W, H)
    sub = subprocess.Popen([sys.executable, __file__, "--bare-subscriber", str(seconds + 8.0)], env=dict(os.environ),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client = Client()
    try:
        client.wait_subscribed(timeout=30)
        time.sleep(0.5)
        sent, dt = _publish_at_30hz(client, msgs, stamp0, seconds)
        out, _ = sub.communicate(timeout=seconds + 30)
    finally:
        client.close()
        if sub.poll() is None:
            sub.kill()
    counts = json.loads(next(ln for ln in out.splitlines() if ln.startswith("BARE "))[5:])
    return {"sent": sent, "seconds": dt, "received": min(counts["color"], counts["depth"]), **counts}


def bench_node_input(W: int, H: int, seconds: float, extra: dict, keep: bool = False):
    """The node (cpu preset) fed W x H RGB-D at 30 Hz for ``seconds``: what it received, queued, dropped and did.

    Returns (figures, (proc, client)) with the node still running when ``keep``."""
    from ros_harness import Client, NodeProcess, status_of

    msgs, stamp0 = _messages(W, H)
    log = Path("/tmp") / f"bench_ros_node_{os.getpid()}_{W}x{H}.log"
    params = {"preset": "cpu", "status_rate_hz": 5.0, "mesh_rate_hz": 0.5, "occupancy_rate_hz": 0.5,
              "voxels_rate_hz": 0.2, "esdf_rate_hz": 0.5, "render_rate_hz": 0.2, "map_dir": "/tmp/bench_ros_maps",
              **extra}
    proc = NodeProcess(params, dict(os.environ), log)
    client = Client()
    try:
        client.wait_subscribed(timeout=60)
        client.wait_for(lambda: status_of(client) is not None, 30, "the node's ~/status", proc)
        qlen = []

        def tick():
            st = status_of(client)
            if st is not None:
                qlen.append(st.queue_length)

        st0 = status_of(client)
        sent, dt = _publish_at_30hz(client, msgs, stamp0, seconds, tick)
        time.sleep(1.0)
        st = status_of(client)
        fig = {
            "sent": sent, "seconds": dt, "received": st.frames_received, "queue_max": max(qlen) if qlen else 0,
            "queue_final": st.queue_length, "dropped_queue_full": st.dropped_queue_full,
            "dropped_unsynced": st.dropped_unsynced, "dropped_no_pose": st.dropped_no_pose,
            "dropped_malformed": st.dropped_malformed, "added": st.frames_added, "rejected": st.frames_rejected,
            "steps": st.steps - st0.steps, "steps_per_s": (st.steps - st0.steps) / (dt + 1.0),
            "keyframes": st.keyframes, "products": st.products_s,
        }
        fig["not_received"] = fig["sent"] - fig["received"] - fig["dropped_unsynced"] - fig["dropped_no_pose"] \
            - fig["dropped_malformed"]
    except BaseException:
        client.close()
        proc.stop()
        raise
    if keep:
        return fig, (proc, client)
    client.close()
    proc.stop()
    return fig, None


def _print_input_table(rows: list[tuple[str, dict]], base: dict) -> None:
    cols = [("sent", "sets published"), ("received", "received (synced sets)"), ("not_received", "lost before sync"),
            ("dropped_unsynced", "dropped unsynced"), ("dropped_queue_full", "dropped queue full (oldest)"),
            ("queue_max", "queue length max (cap 8)"), ("added", "frames added to the mapper"),
            ("steps", "training steps"), ("steps_per_s", "training steps/s")]
    head = f"  {'':<30}" + "".join(f"{label:>26}" for label, _ in rows)
    print(head)
    for key, name in cols:
        cells = []
        for _, fig in rows:
            v = fig.get(key)
            if v is None:
                cells.append(f"{'-':>26}")
                continue
            b = base.get(key)
            ratio = f" ({v / b:.2f}x)" if isinstance(b, (int, float)) and b else ""
            cells.append(f"{(f'{v:.2f}' if isinstance(v, float) else str(v)) + ratio:>26}")
        print(f"  {name:<30}" + "".join(cells))


def bench_node(seconds: float, full_res: bool = True) -> None:
    """Input side at 30 Hz (bare subscriber, node at 320x240 and 640x480), then query_field with 100 k points."""
    from geometry_msgs.msg import Point
    from neural_mapping_interfaces.srv import QueryField
    from std_srvs.srv import SetBool

    _ros_env()
    print(f"node: FASTRTPS_DEFAULT_PROFILES_FILE={os.environ['FASTRTPS_DEFAULT_PROFILES_FILE']}, "
          f"{seconds:.0f} s of 30 Hz input per case; ratios are to the node at 320x240 in this run")
    rows = []
    bare = bench_bare(640, 480, seconds)
    rows.append(("bare sub 640x480", {"sent": bare["sent"], "received": bare["received"],
                                      "not_received": bare["sent"] - bare["received"]}))
    base, _ = bench_node_input(320, 240, seconds, {})
    rows.append(("node 320x240", base))
    if full_res:
        fr, _ = bench_node_input(640, 480, seconds, {"input_max_width": -1})
        rows.append(("node 640x480 full res", fr))
    auto, (proc, client) = bench_node_input(640, 480, seconds, {}, keep=True)
    rows.append(("node 640x480 auto (->320)", auto))
    _print_input_table(rows, base)
    line("queue: largest length at 640x480 x 30 Hz input (bound 8)", float(auto["queue_max"]), "frames", 8.0)
    line("640x480 sets received by the node / published", auto["received"] / max(auto["sent"], 1), "", 0.95,
         lower_is_better=False)
    try:
        # query_field, 100 k points inside the room
        rng = np.random.default_rng(0)
        pts = rng.uniform([-2.4, -1.9, 0.1], [2.4, 1.9, 2.5], size=(100_000, 3))

        from neural_mapping.ros.fastpath import use_arrays

        array_cli = client.wait_for_service(QueryField, "query_field")
        ArrayRequest = use_arrays(array_cli)

        def query_3x(label, want_gradient=False, arrays=False):
            """Median of 3 calls; the client builds Point messages (not counted) or, with ``arrays``,
            sends and receives numpy arrays (ros/fastpath.use_arrays; building counted)."""
            times, build = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                if arrays:
                    r = client.call_client(array_cli, ArrayRequest(pts, want_gradient), timeout=120)
                    t1 = t0
                else:
                    req = QueryField.Request(points=[Point(x=x, y=y, z=z) for x, y, z in pts.tolist()],
                                             want_gradient=want_gradient)
                    t1 = time.perf_counter()
                    r = client.call(QueryField, "query_field", req, timeout=120)
                t2 = time.perf_counter()
                assert r.success and len(r.sdf) == len(pts), r.message
                assert len(r.gradients) == (len(pts) if want_gradient else 0)
                build.append(t1 - t0)
                times.append(t2 - t1)
                print(f"  query_field: {r.message}")
            if not arrays:
                print(f"  request building in the client {1e3 * statistics.median(build):.0f} ms (not counted)")
            who = "array client" if arrays else "message client"
            line(f"query_field 100 k, {who}, {label} (median of 3)", statistics.median(times), "s", 0.5)

        for label in ("while training", "paused"):
            if label == "paused":
                client.call(SetBool, "pause", SetBool.Request(data=True))
            query_3x(label)
            query_3x(f"{label}, with gradients", want_gradient=True)
            if ArrayRequest is not None:
                query_3x(f"{label}, with gradients", want_gradient=True, arrays=True)
    finally:
        client.close()
        proc.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="30 Hz input duration for the node run")
    ap.add_argument("--skip-node", action="store_true", help="only the in-process benchmarks")
    ap.add_argument("--skip-mesh", action="store_true", help="no mesh figures")
    ap.add_argument("--input-quality", action="store_true",
                    help="also: map accuracy and add_frame cost of 640x480 input, full vs subsampled to 320x240")
    ap.add_argument("--mesh-train-steps", type=int, default=300, help="training steps before the mesh figures")
    ap.add_argument("--mesh-change-steps", type=int, default=25, help="training steps in a change")
    ap.add_argument("--no-full-res", action="store_true", help="skip the node case at 640x480 full resolution")
    ap.add_argument("--bare-subscriber", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_subscriber:
        return bare_subscriber(args.bare_subscriber)
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    bench_convert()
    if not args.skip_node:
        bench_node(args.seconds, full_res=not args.no_full_res)
    if args.input_quality:
        bench_input_quality()
    if not args.skip_mesh:
        bench_mesh(args.mesh_train_steps, args.mesh_change_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
