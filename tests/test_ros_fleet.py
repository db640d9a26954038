"""Fleet over DDS (docs/fleet.md): two robot nodes (/r1, /r2) with submaps, each given a different half of the
synthetic room's walk, publish their frozen submaps once their input is idle; a map server started after they
finished gets every submap (transient local), answers where only one robot saw, meshes both halves, and counts
and drops malformed submap messages while it keeps serving. Real processes over DDS, small frames, `nice`."""

from __future__ import annotations

import array
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ros_harness import Client, NodeProcess, node_command, status_of

REPO = Path(__file__).resolve().parents[1]
N, W, H = 16, 80, 60
GRID = {"submaps.size_m": 3.0, "submaps.overlap_m": 0.5}  # cells centred on the origin: r1 sees y < 0, r2 y > 0
QUIET = {"mesh_rate_hz": 0.0, "occupancy_rate_hz": 0.0, "voxels_rate_hz": 0.0, "esdf_rate_hz": 0.0,
         "render_rate_hz": 0.0}
ROBOT = {**GRID, **QUIET, "submaps.enabled": True, "submaps.hash_log2_table": 12, "encoding.hash_log2_table": 12,
         "train.rays_per_step": 512, "submaps_freeze_idle_s": 4.0, "status_rate_hz": 2.0, "device": "cpu"}
SERVER = {**GRID, **QUIET, "mesh_rate_hz": 0.5, "status_rate_hz": 2.0, "discovery_period_s": 1.0, "device": "cpu",
          "mesh_budget_s": 0.0}


def _niced(cmd):
    return ["nice", "-n", "5", *cmd]


class Proc(NodeProcess):
    """NodeProcess running any command (the robot node under nice, or the map server)."""

    def __init__(self, cmd, env, log_path):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)


def server_command(params: dict) -> list[str]:
    exe = REPO / ".venv" / "bin" / "map_server"
    cmd = node_command(params)
    cmd[0:1] = [str(exe)] if exe.exists() else [sys.executable, "-m", "neural_mapping.ros.map_server"]
    return [c.replace("neural_mapper:=info", "map_server:=info") for c in cmd]


def status_values(client) -> dict[str, str] | None:
    msg = client.get("status")
    return None if msg is None else {kv.key: kv.value for kv in msg.status[0].values}


def only_seen_by(mine, others, n_pts: int = 40):
    """(surface points (n, 3), unit directions from their camera (n, 3)) of frames ``mine``, every one more
    than 0.6 m from any depth point of frames ``others``."""
    from scipy.spatial import cKDTree

    from neural_mapping.camera import backproject_depth

    tree = cKDTree(np.concatenate([backproject_depth(f.depth_m, f.K, f.T_WC, stride=2) for f in others]))
    pts, dirs = [], []
    for f in mine:
        p = backproject_depth(f.depth_m, f.K, f.T_WC, stride=7)
        d, _ = tree.query(p)
        p = p[d > 0.6]
        pts.append(p)
        dirs.append((p - f.T_WC[:3, 3]) / np.linalg.norm(p - f.T_WC[:3, 3], axis=1, keepdims=True))
    pts, dirs = np.concatenate(pts), np.concatenate(dirs)
    pick = np.random.default_rng(0).choice(len(pts), size=min(n_pts, len(pts)), replace=False)
    return pts[pick], dirs[pick]


def query(client, pts):
    from geometry_msgs.msg import Point

    from neural_mapping_interfaces.srv import QueryField

    req = QueryField.Request(points=[Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts])
    r = client.call(QueryField, "query_field", req, timeout=120)
    assert r.success, r.message
    return np.asarray(r.sdf), np.asarray(r.occupancy)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Robots r1 and r2 mapped their halves and published everything; then the map server was started."""
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.ros.submap_pub import SUBMAP_QOS
    from neural_mapping_interfaces.msg import Submap

    tmp = tmp_path_factory.mktemp("fleet")
    seq = synthetic_sequence(n_frames=N, width=W, height=H)
    halves = {"r1": seq.frames[:N // 2], "r2": seq.frames[N // 2:]}
    procs, clients = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROS_DOMAIN_ID", str(random.randint(1, 200)))
        mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        mp.setenv("ROS_LOCALHOST_ONLY", "1")
        env = dict(os.environ)
        published: dict[tuple[str, str], int] = {}  # what the robots published: (robot, id) -> newest version
        messages = []  # (robot, id, version) of every message, in order
        lock = threading.Lock()

        def keep(msg):
            with lock:
                k = (msg.robot_id, msg.id)
                published[k] = max(published.get(k, -1), int(msg.version))
                messages.append((msg.robot_id, msg.id, int(msg.version)))

        try:
            for r in halves:
                cmd = node_command({**ROBOT, "map_dir": str(tmp / r)}, remaps={"__ns": f"/{r}"})
                procs[r] = Proc(_niced(cmd), env, tmp / f"{r}.log")
            for r in halves:
                clients[r] = Client(ns=f"/{r}/neural_mapper", node_ns=f"/{r}")
                clients[r].node.create_subscription(Submap, f"/{r}/neural_mapper/submaps", keep, SUBMAP_QOS)
            for r, frames in halves.items():
                clients[r].wait_subscribed(timeout=120)
                clients[r].wait_for(lambda c=clients[r]: c.get("status"), 60, f"{r}'s first ~/status", procs[r])
                clients[r].publish_frames_acked(frames)
            for r in halves:  # the robots' input is idle: they freeze and publish what they trained
                clients[r].wait_for(lambda p=procs[r]: "froze submaps" in p.log(), 120, f"{r} freezing its submaps",
                                    procs[r])
            time.sleep(2.0)
            with lock:
                expected, sent = dict(published), list(messages)
            server = Proc(server_command(SERVER), env, tmp / "server.log")
            procs["server"] = server
            clients["server"] = Client(ns="/map_server")
            yield {"seq": seq, "halves": halves, "procs": procs, "clients": clients, "expected": expected,
                   "sent": sent, "env": env, "tmp": tmp}
        finally:
            for c in clients.values():
                c.close()
            for p in procs.values():
                p.stop()


def wait_server_holds(fleet, expected, timeout=120):
    c, p = fleet["clients"]["server"], fleet["procs"]["server"]
    want = " ".join(f"{r}/{i}@{v}" for (r, i), v in sorted(expected.items()))
    return c.wait_for(lambda: (lambda s: s if s and s["versions"] == want else None)(status_values(c)), timeout,
                      f"the map server holding {want}", p)


def test_server_started_after_the_robots_gets_every_submap(fleet):
    expected = fleet["expected"]
    robots = {r for r, _ in expected}
    assert robots == {"r1", "r2"}, expected  # robot ids default to the namespaces
    assert all(v >= 1 for v in expected.values())  # frozen at least once
    st = wait_server_holds(fleet, expected)
    assert st["robots"] == "r1,r2" and int(st["submaps"]) == len(expected)
    assert st["topics"] == "/r1/neural_mapper/submaps,/r2/neural_mapper/submaps"
    # every version each robot published, oldest first (each newer than the one before it: all merged)
    sent = fleet["sent"]
    assert len(set(sent)) == len(sent) and len(sent) >= len(expected)
    assert int(st["messages_received"]) == int(st["messages_merged"]) == len(sent), (st, sent)
    assert int(st["messages_malformed"]) == 0 and int(st["messages_stale"]) == 0
    # the cell both robots saw (the room's centre) is held twice, once per robot, and blended
    assert ("r1", "s+0000+0000") in expected and ("r2", "s+0000+0000") in expected
    # r1 walked the y < 0 half, r2 the y > 0 half: each has a cell the other has not
    assert ("r1", "s+0000-0001") in expected and ("r2", "s+0000-0001") not in expected
    assert ("r2", "s+0000+0001") in expected and ("r1", "s+0000+0001") not in expected


@pytest.mark.parametrize("robot,other", [("r1", "r2"), ("r2", "r1")])
def test_server_answers_where_only_one_robot_saw(fleet, robot, other):
    wait_server_holds(fleet, fleet["expected"])
    pts, dirs = only_seen_by(fleet["halves"][robot], fleet["halves"][other])
    assert len(pts) >= 20
    sdf_s, occ_s = query(fleet["clients"]["server"], pts)
    sdf_r, occ_r = query(fleet["clients"][robot], pts)
    # on the surface only `robot` saw: the server's field is zero there, as that robot's own field is
    assert np.median(np.abs(sdf_s)) < 0.03, sdf_s
    assert np.median(np.abs(sdf_s - sdf_r)) < 0.01, (sdf_s, sdf_r)
    # observed where the robot observed it (the server's coverage is the union of the robots')
    assert (occ_r != 0.5).sum() > 0 and np.all(occ_s[occ_r != 0.5] != 0.5)
    # 10 cm in front of that surface, towards the camera that saw it: free space, positive distance
    sdf_f, _ = query(fleet["clients"]["server"], pts - 0.1 * dirs)
    assert np.median(sdf_f) > 0.05, sdf_f


def test_server_mesh_spans_both_robots(fleet):
    from neural_mapping.ros.convert_out import marker_triangles

    wait_server_holds(fleet, fleet["expected"])
    c, p = fleet["clients"]["server"], fleet["procs"]["server"]
    m = c.wait_for(lambda: (lambda m: m if m is not None and len(m.points) > 0 else None)(c.get("mesh")), 120,
                   "/map_server/mesh", p)
    assert m.header.frame_id == "map"
    tri = marker_triangles(m)
    y = tri.mean(axis=1)[:, 1]
    # walls near y = -2 (r1's) and y = +2 (r2's): both robots' surfaces in one mesh
    assert (y < -1.7).sum() > 50 and (y > 1.7).sum() > 50


def test_malformed_submaps_are_counted_and_the_server_keeps_serving(fleet):
    from neural_mapping.ros.submap_pub import SUBMAP_QOS, submap_msg
    from neural_mapping.submaps.codec import MAGIC
    from neural_mapping_interfaces.msg import Submap

    expected = fleet["expected"]
    wait_server_holds(fleet, expected)
    c, p = fleet["clients"]["server"], fleet["procs"]["server"]
    # a robot the server discovers later (r3), sending garbage; and a message on r1's topic whose fields lie
    # about its bytes (a version newer than the data's)
    pub3 = c.node.create_publisher(Submap, "/r3/neural_mapper/submaps", SUBMAP_QOS)
    junk = Submap(robot_id="r3", id="s+0000+0000", version=7)
    junk.data = array.array("B", MAGIC + b"{not json\n")
    pub3.publish(junk)
    good = fleet["clients"]["r1"]  # a real submap of r1, re-published with a wrong version field
    msgs = []
    sub = good.node.create_subscription(Submap, "/r1/neural_mapper/submaps", msgs.append, SUBMAP_QOS)
    good.wait_for(lambda: msgs, 30, "r1's submaps (transient local)")
    lying = submap_msg(bytes(msgs[0].data), "map", 0)
    lying.version += 5
    pub1 = c.node.create_publisher(Submap, "/r1/neural_mapper/submaps", SUBMAP_QOS)
    pub1.publish(lying)
    st = c.wait_for(lambda: (lambda s: s if s and int(s["messages_malformed"]) >= 2 else None)(status_values(c)), 60,
                    "the two malformed messages counted", p)
    assert int(st["messages_malformed"]) == 2
    assert "/r3/neural_mapper/submaps" in st["topics"].split(",")
    assert "dropped a malformed submap message" in p.log()
    assert st["versions"] == wait_server_holds(fleet, expected)["versions"]  # nothing held changed
    assert p.proc.poll() is None
    sdf, _ = query(c, np.array([[0.0, 0.0, 1.2]]))  # still serving
    assert np.isfinite(sdf).all()
    good.node.destroy_subscription(sub)


def test_a_server_given_robots_takes_only_their_submaps(fleet):
    """``robots:=[r2]``: only /r2/neural_mapper/submaps, though /r1's is in the graph too."""
    expected = {k: v for k, v in fleet["expected"].items() if k[0] == "r2"}
    cmd = server_command(SERVER) + ["-p", "robots:=[/r2/]", "-r", "__node:=map_server_r2"]
    p = Proc(cmd, fleet["env"], fleet["tmp"] / "server_r2.log")
    c = Client(ns="/map_server_r2")
    try:
        want = " ".join(f"{r}/{i}@{v}" for (r, i), v in sorted(expected.items()))
        st = c.wait_for(lambda: (lambda s: s if s and s["versions"] == want else None)(status_values(c)), 120,
                        f"the second server holding {want}", p)
        time.sleep(2.5)  # more than one discovery period: still only r2
        st = status_values(c)
        assert st["topics"] == "/r2/neural_mapper/submaps" and st["robots"] == "r2" and st["versions"] == want
    finally:
        c.close()
        p.stop()


def test_a_robot_publishes_its_active_submaps_at_shutdown(fleet):
    """submaps_freeze_idle_s 0 (no idle freeze): what the robot still trains is frozen and published on SIGINT."""
    from neural_mapping.ros.submap_pub import SUBMAP_QOS
    from neural_mapping_interfaces.msg import Submap

    cmd = node_command({**ROBOT, "submaps_freeze_idle_s": 0.0, "map_dir": str(fleet["tmp"] / "r4")},
                       remaps={"__ns": "/r4"})
    p = Proc(_niced(cmd), fleet["env"], fleet["tmp"] / "r4.log")
    c = Client(ns="/r4/neural_mapper", node_ns="/r4")
    got = []
    c.node.create_subscription(Submap, "/r4/neural_mapper/submaps", got.append, SUBMAP_QOS)
    try:
        c.wait_subscribed(timeout=120)
        c.wait_for(lambda: c.get("status"), 60, "r4's first ~/status", p)
        c.publish_frames_acked(fleet["halves"]["r1"][:1])  # one frame: its (at most max_active) submaps stay active
        c.wait_for(lambda: (lambda s: s if s and s.steps >= 20 else None)(status_of(c)), 120, "20 steps", p)
        time.sleep(1.5)
        assert got == []  # nothing froze: nothing published yet
        assert p.stop() == 0
        c.wait_for(lambda: got, 10, "the submaps published at shutdown")
        time.sleep(0.5)
        ids = sorted(m.id for m in got)
        assert ids and all(m.robot_id == "r4" and m.version == 1 for m in got), [(m.id, m.version) for m in got]
        assert len(set(ids)) == len(ids) and "no input for" not in p.log()
        for m in got:
            from neural_mapping.submaps.codec import decode_submap

            rec, state = decode_submap(bytes(m.data))
            assert (rec.id, rec.robot_id, rec.version) == (m.id, "r4", 1) and m.has_bounds
            assert m.header.frame_id == "map" and "field" in state
    finally:
        c.close()
        p.stop()
