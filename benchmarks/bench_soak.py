"""Soak: RGB-D input at 60 Hz for N minutes into a real node over DDS (not a CI test).

Prints, with the target of each: the frame queue stays bounded (max length <= queue_size), every
set sent is accounted for in ~/status (received or a counted drop; what DDS lost is what is left),
resident memory growth from the end of the warm-up (the first 20 % of the run and until the keyframe
buffer is at its cap) to the end (< 10 %) with the memory curve, and per product the rate
achieved against the configured one with the seconds one computation took (the figures behind the
cpu preset's default rates, NodeConfig in ros/params.py).

Usage: .venv/bin/python benchmarks/bench_soak.py [--minutes 10] [--width 320 --height 240] [--hz 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))


def soak(minutes: float, W: int, H: int, hz: float, warmup_frac: float = 0.2) -> int:
    from bench_ros import _messages, _ros_env, line
    from ros_harness import Client, NodeProcess, status_of

    from neural_mapping.config import preset
    from neural_mapping.ros.params import NodeConfig

    _ros_env()
    msgs, stamp0 = _messages(W, H)
    ncfg = NodeConfig()
    log = Path("/tmp") / f"bench_soak_{os.getpid()}.log"
    proc = NodeProcess({"preset": "cpu", "map_dir": "/tmp/bench_soak_maps"}, dict(os.environ), log)
    client = Client()
    seconds = 60.0 * minutes
    samples = []  # (t, status)
    try:
        client.wait_subscribed(timeout=120)
        client.wait_for(lambda: status_of(client), 60, "the node's ~/status", proc)
        period = 1.0 / hz
        t_start = time.monotonic()
        next_t, i, next_sample = t_start, 0, t_start
        while time.monotonic() - t_start < seconds:
            stamp = stamp0 + int(round(i * period * 1e9))
            color, depth, info, pose = msgs[i % len(msgs)]
            for m in (color, depth, info, pose):
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            for pub, m in ((client.pub_pose, pose), (client.pub_info, info), (client.pub_color, color),
                           (client.pub_depth, depth)):
                pub.publish(m)
            i += 1
            now = time.monotonic()
            if now >= next_sample and status_of(client) is not None:
                samples.append((now - t_start, status_of(client)))
                next_sample += 1.0
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
        sent, dt = i, time.monotonic() - t_start
        time.sleep(2.0)
        end = status_of(client)
    finally:
        client.close()
        rc = proc.stop()
    # warm-up: the first warmup_frac of the run and until the keyframe buffer is at its cap (its filling is
    # the map's designed growth, bounded by keyframes.max_keyframes / max_mb; what grows after it is the target)
    kf_cap = preset("cpu").keyframes.max_keyframes
    warm_t, warm = next(((t, st) for t, st in samples if t >= warmup_frac * dt and st.keyframes >= kf_cap),
                        samples[-1])
    print(f"soak: {sent} RGB-D sets of {W}x{H} sent at {sent / dt:.1f} Hz for {dt / 60:.1f} min "
          f"(node exit code {rc}; log {log})")
    qmax = max(st.queue_length for _, st in samples)
    line("frame queue max length (bound: queue_size)", qmax, "frames", ncfg.queue_size)
    counted = end.frames_received + end.dropped_unsynced + end.dropped_no_pose + end.dropped_malformed
    print(f"  received {end.frames_received}, dropped: queue_full {end.dropped_queue_full}, unsynced "
          f"{end.dropped_unsynced}, no_pose {end.dropped_no_pose}, malformed {end.dropped_malformed}; added "
          f"{end.frames_added}, rejected {end.frames_rejected}; not seen by the node (lost by DDS): {sent - counted} "
          f"(missing_estimated from stamp gaps: {end.missing_estimated}; per stream: {end.input_counts})")
    line("sets accounted for in ~/status", 100.0 * counted / max(sent, 1), "%")
    growth = 100.0 * (end.memory_mb - warm.memory_mb) / max(warm.memory_mb, 1e-6)
    print(f"  resident memory {warm.memory_mb:.0f} MB after the warm-up (at {warm_t:.0f} s: {warmup_frac:.0%} of the run "
          f"and the keyframe buffer full, {kf_cap}), {end.memory_mb:.0f} MB "
          f"at the end; training {end.steps_per_s:.2f} steps/s, {end.keyframes} keyframes")
    line("resident memory growth after warm-up", growth, "%", 10.0)
    curve = [(t, st) for t, st in samples if t >= 0][:: max(1, len(samples) // 12)]
    print("  resident memory over the run (s: MB, keyframes): " + ", ".join(
        f"{t:.0f}: {st.memory_mb:.0f}, {st.keyframes}" for t, st in curve))
    print(f"  product seconds (last computation): {end.products_s}")
    for name in ("mesh", "occupancy", "voxels", "esdf", "render"):
        rate = getattr(ncfg, f"{name}_rate_hz")
        achieved = getattr(end, f"{name}_hz_achieved")
        if rate > 0:
            line(f"{name} achieved rate (configured {rate:g} Hz)", achieved, "Hz", rate, lower_is_better=False)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--hz", type=float, default=60.0)
    a = ap.parse_args()
    return soak(a.minutes, a.width, a.height, a.hz)


if __name__ == "__main__":
    sys.exit(main())
