"""The catalogue of bad inputs (tests/README.md), node side: one node process, every class sent over
DDS in turn; each is refused or counted in ~/status, the node stays up and keeps mapping."""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest

from ros_harness import frame_messages, running_node, status_of

W, H = 80, 60


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from neural_mapping.io.synthetic import synthetic_sequence

    tmp = tmp_path_factory.mktemp("ros_bad")
    params = {"preset": "cpu", "encoding.hash_log2_table": 12, "train.rays_per_step": 256,
              "map_dir": str(tmp / "maps"), "status_rate_hz": 10.0, "warn_throttle_s": 0.0,
              "mesh_rate_hz": 0.0, "occupancy_rate_hz": 0.0, "voxels_rate_hz": 0.0, "esdf_rate_hz": 0.0,
              "render_rate_hz": 0.0, "save_on_shutdown": True, "shutdown_map_name": "last.map"}
    with running_node(params, tmp / "node.log") as (proc, client):
        seq = synthetic_sequence(n_frames=12, width=W, height=H, seed=1)
        yield {"client": client, "proc": proc, "tmp": tmp, "frames": seq.frames, "next": [0]}


def _counted(st) -> int:
    return (st.frames_received + st.frames_rejected + st.dropped_malformed + st.dropped_no_pose
            + st.dropped_unsynced)


def _send(node, edit, tries: int = 4, counter=_counted):
    """Publish one set of the next good frame, changed by edit(color, depth, info, pose) (new stamps each
    try), until ~/status counts it; returns (status before, status after)."""
    c, proc = node["client"], node["proc"]

    def settled():  # every frame received so far decided (added, rejected or dropped): none still queued
        s = status_of(c)
        done = s and s.queue_length == 0 and s.frames_added + s.frames_rejected + s.dropped_queue_full >= s.frames_received
        return s if done else None

    st0 = c.wait_for(settled, 20, "the frames received so far to be decided", proc)
    f = node["frames"][node["next"][0] % len(node["frames"])]
    for i in range(tries):
        node["next"][0] += 1
        msgs = list(frame_messages(f))
        stamp = 2_000_000_000_000 + node["next"][0] * 50_000_000
        for m in msgs:
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        edit(*msgs)
        color, depth, info, pose = msgs
        for pub, m in ((c.pub_pose, pose), (c.pub_info, info), (c.pub_color, color), (c.pub_depth, depth)):
            pub.publish(m)
            if m is info:  # topics are not ordered across DDS: a depth image that overtook its camera_info
                time.sleep(0.1)  # was synced with the previous (good) one (seen once in CI)
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            st = status_of(c)
            if st and counter(st) > counter(st0):
                assert proc.proc.poll() is None
                return st0, st
            time.sleep(0.05)
    raise AssertionError(f"the set was not counted after {tries} tries\n{proc.log()[-3000:]}")


def _depth32(depth, values):
    arr = np.full((depth.height, depth.width), values, np.float32) if np.isscalar(values) else values
    depth.encoding, depth.step, depth.data = "32FC1", 4 * depth.width, arr.astype("<f4").tobytes()


def test_missing_camera_info_sets_wait_with_a_warning(node):
    c, proc = node["client"], node["proc"]
    f = node["frames"][0]
    color, depth, _, pose = frame_messages(f)
    for _ in range(3):
        for pub, m in ((c.pub_pose, pose), (c.pub_color, color), (c.pub_depth, depth)):
            pub.publish(m)
        time.sleep(0.2)
    c.wait_for(lambda: "but no camera_info yet" in proc.log(), 10, "the camera_info warning", proc)
    assert status_of(c).frames_received == 0


def test_good_frames_are_mapped(node):
    for _ in range(3):
        _, st = _send(node, lambda *m: None)
    node["client"].wait_for(lambda: (lambda s: s and s.frames_added >= 3 and s.steps >= 5)(status_of(node["client"])),
                            60, "mapping", node["proc"])


BAD_SETS = {  # class -> edit of (color, depth, info, pose); each is refused: malformed or rejected, never added
    "depth 32FC1 all NaN": lambda c, d, i, p: _depth32(d, np.nan),
    "depth 32FC1 all inf": lambda c, d, i, p: _depth32(d, np.inf),
    "depth 32FC1 negative": lambda c, d, i, p: _depth32(d, -1.0),
    "depth 32FC1 all zero": lambda c, d, i, p: _depth32(d, 0.0),
    "depth 16UC1 all zero": lambda c, d, i, p: (setattr(d, "encoding", "16UC1"), setattr(d, "step", 2 * d.width),
                                                setattr(d, "data", bytes(2 * d.width * d.height))),
    "colour with a depth encoding": lambda c, d, i, p: setattr(c, "encoding", "32FC1"),
    "depth with a colour encoding": lambda c, d, i, p: setattr(d, "encoding", "rgb8"),
    "unknown encoding": lambda c, d, i, p: setattr(d, "encoding", "bayer_xyz"),
    "data shorter than height x step": lambda c, d, i, p: setattr(c, "data", bytes(c.data)[:-1]),
    "step smaller than a row": lambda c, d, i, p: setattr(d, "step", 3),
    "empty image": lambda c, d, i, p: (setattr(c, "height", 0), setattr(c, "width", 0), setattr(c, "data", b"")),
    "camera_info of another size": lambda c, d, i, p: (setattr(i, "width", 2 * W), setattr(i, "height", 2 * H)),
    "zero intrinsics": lambda c, d, i, p: setattr(i, "k", [0.0] * 9),
    "NaN intrinsics": lambda c, d, i, p: setattr(i, "k", [float("nan")] + list(i.k)[1:]),
    "negative focal length": lambda c, d, i, p: setattr(i, "k", [-abs(i.k[0])] + list(i.k)[1:]),
    "NaN pose": lambda c, d, i, p: setattr(p.pose.position, "x", float("nan")),
    "zero quaternion": lambda c, d, i, p: [setattr(p.pose.orientation, k, 0.0) for k in "xyzw"],
    "non-unit quaternion (non-orthonormal rotation)": lambda c, d, i, p: setattr(p.pose.orientation, "w", 3.0),
}


@pytest.mark.parametrize("name", list(BAD_SETS))
def test_a_bad_set_is_refused_and_counted(node, name):
    def refused(s):
        return s.dropped_malformed + s.frames_rejected + s.dropped_no_pose + s.dropped_unsynced

    c = node["client"]
    st0, _ = _send(node, BAD_SETS[name])
    # converted sets go through the queue to the mapper, which decides a moment later
    st = c.wait_for(lambda: (lambda s: s if s and (refused(s) > refused(st0) or s.frames_added > st0.frames_added)
                             else None)(status_of(c)), 15, f"{name}: a decision", node["proc"])
    assert st.frames_added == st0.frames_added and refused(st) > refused(st0), name


def test_stamp_pathologies_are_survived_and_mapping_goes_on(node):
    c = node["client"]

    def shift_pose(s):
        def edit(col, d, i, p):
            t = p.header.stamp.sec * 10**9 + p.header.stamp.nanosec + int(s * 1e9)
            p.header.stamp.sec, p.header.stamp.nanosec = divmod(t, 10**9)
        return edit

    _send(node, shift_pose(3.0), counter=lambda s: s.dropped_no_pose + s.frames_received)  # pose gap > slop and max gap
    node["next"][0] -= 40  # out of order: 2 s before the last set
    _send(node, lambda *m: None, counter=lambda s: _counted(s))
    node["next"][0] += 40
    f = node["frames"][3]
    msgs = frame_messages(f)  # a duplicate: the same set twice
    for _ in range(2):
        for pub, m in zip((c.pub_color, c.pub_depth, c.pub_info, c.pub_pose), msgs):
            pub.publish(m)
    far = node["next"][0]
    node["next"][0] += 10**6 * 20  # far future: 1e6 s ahead
    _send(node, lambda *m: None, counter=lambda s: _counted(s))
    node["next"][0] = far + 5
    st0 = status_of(c)
    for _ in range(3):  # normal stamps again: still mapped (or counted), and training goes on
        _send(node, lambda *m: None)
    c.wait_for(lambda: (lambda s: s and s.steps > st0.steps + 3)(status_of(c)), 30, "training", node["proc"])


def test_render_requests_of_zero_absurd_or_nan_size_are_refused(node):
    from neural_mapping.ros import convert_out as co
    from neural_mapping_interfaces.srv import RenderView

    f = node["frames"][0]
    for (w, h, pose, words) in [(0, 0, f.T_WC, "must be within"), (5000, 10, f.T_WC, "must be within"),
                                (4096, 4096, f.T_WC, "render_max_pixels")]:
        req = RenderView.Request(pose=co.T_to_pose(pose), camera_info=co.camera_info_msg(f.K, h, w, "v"))
        r = node["client"].call(RenderView, "render_view", req, 10)
        assert not r.success and words in r.message, (w, h, r.message)
    req = RenderView.Request(pose=co.T_to_pose(f.T_WC), camera_info=co.camera_info_msg(f.K, 10, 10, "v"))
    req.pose.orientation.w = float("nan")
    r = node["client"].call(RenderView, "render_view", req, 10)
    assert not r.success and "pose" in r.message


def test_save_names_escaping_map_dir_and_bad_map_files_are_refused(node):
    import torch

    from neural_mapping_interfaces.srv import LoadMap, QueryField, SaveMap
    from geometry_msgs.msg import Point

    c, maps = node["client"], node["tmp"] / "maps"
    for name in ["../x.map", "/tmp/abs.map", "", "a/b.map", "..", "x" * 300 + ".map", "a\\..\\b.map"]:
        r = c.call(SaveMap, "save_map", SaveMap.Request(name=name))
        assert not r.success and r.path == "", name
    assert c.call(SaveMap, "save_map", SaveMap.Request(name="good.map")).success
    good = (maps / "good.map").read_bytes()
    (maps / "truncated.map").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[-100] ^= 0xFF
    (maps / "corrupted.map").write_bytes(bytes(corrupt))
    newer, n = re.subn(rb'"format_version":\d+', b'"format_version":99', good, count=1)
    assert n == 1  # a literal "format_version":1 stopped matching with format 2 and the file loaded
    (maps / "version.map").write_bytes(newer)
    torch.save({"weights": torch.zeros(3)}, maps / "foreign.map")
    for name in ["truncated.map", "corrupted.map", "version.map", "foreign.map"]:
        r = c.call(LoadMap, "load_map", LoadMap.Request(name=name))
        assert not r.success and "loading" in r.message, (name, r.message)
    q = c.call(QueryField, "query_field", QueryField.Request(points=[Point(x=0.0, y=0.0, z=1.0)]))
    assert q.success  # the current map was kept


def test_sigterm_stops_the_node_within_2_s_and_saves_the_map_first(node):
    import signal

    from neural_mapping.mapfile import load_map

    proc = node["proc"]
    steps = status_of(node["client"]).steps
    t0 = time.monotonic()
    os.kill(proc.proc.pid, signal.SIGTERM)
    rc = proc.proc.wait(timeout=30)
    dt = time.monotonic() - t0
    print(f"SIGTERM: exit {rc} after {dt:.2f} s")
    log = proc.log()
    assert rc == 0 and dt < 5.0 and "terminate called" not in log and "Traceback" not in log, log[-3000:]
    assert "SIGTERM received" in log and "save_on_shutdown: saved" in log
    assert load_map(node["tmp"] / "maps" / "last.map").stats.steps >= steps
