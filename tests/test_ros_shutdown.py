"""Shutdown and kills of a real node process: a second SIGINT during shutdown with a render
running, SIGKILL during save_map. Each test starts its own node (training when signalled). SIGTERM
ends test_ros_bad_inputs.py's node and SIGINT test_ros_robustness.py's (one process each)."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import pytest

from ros_harness import Client, NodeProcess, status_of

BASE = {"preset": "cpu", "train.rays_per_step": 512, "status_rate_hz": 5.0, "mesh_rate_hz": 0.0,
        "occupancy_rate_hz": 0.0, "voxels_rate_hz": 0.0, "esdf_rate_hz": 0.0, "render_rate_hz": 0.0}


@pytest.fixture
def start(ros_env, tmp_path):
    """start(**params) -> (proc, client): a node with two frames integrated and training."""
    from neural_mapping.io.synthetic import synthetic_sequence

    made = []

    def run(**params):
        proc = NodeProcess({**BASE, "map_dir": str(tmp_path / "maps"), **params}, ros_env, tmp_path / "node.log")
        client = Client()
        made.append((proc, client))
        client.wait_subscribed(timeout=60)
        client.wait_for(lambda: status_of(client), 30, "the first ~/status", proc)
        client.publish_frames_acked(synthetic_sequence(n_frames=2, width=160, height=120, seed=0).frames)
        client.wait_for(lambda: (lambda s: s and s.frames_added >= 1 and s.steps >= 3)(status_of(client)), 60,
                        "training", proc)
        return proc, client

    yield run
    for proc, client in made:
        client.close()
        proc.stop()


def _signal_and_wait(proc, signals, gap_s=0.1):
    t0 = time.monotonic()
    for i, sig in enumerate(signals):
        if i:
            time.sleep(gap_s)
        os.kill(proc.proc.pid, sig)
    try:
        rc = proc.proc.wait(timeout=30)
    finally:
        dt = time.monotonic() - t0
    print(f"{'+'.join(signal.Signals(s).name for s in signals)}: exit {rc} after {dt:.2f} s")
    return rc, dt


def _assert_clean_exit(proc, rc, dt, limit_s=5.0):
    log = proc.log()
    assert rc == 0, log[-3000:]
    assert dt < limit_s, f"shutdown took {dt:.2f} s (target 2 s)"
    for bad in ["terminate called", "KeyboardInterrupt", "Traceback"]:
        assert bad not in log, log[-3000:]


def test_a_second_sigint_during_shutdown_is_tolerated_and_cancels_a_running_render(start, tmp_path):
    """A wide render_view (4096x64, up to 2048 sphere-tracing steps a ray through a barely trained
    field) is running when SIGINT comes twice: the node saves its map and exits cleanly within 5 s.

    One row of it is 4096 rays: as one band (the code before render pieces were cut at
    MAX_BAND_RAYS columns and cancelled inside a band) it took 15 s at 512 steps in one process at
    load 6 on 2 cores, and shutdown waited for that band; now the band in flight stops before its
    next field evaluation (ros/render.py stop_inside)."""
    from neural_mapping.mapfile import load_map
    from neural_mapping.ros import convert_out as co
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping_interfaces.srv import RenderView

    proc, client = start(save_on_shutdown=True, **{"render.render_samples": 2048})
    f = synthetic_sequence(n_frames=1, width=160, height=120, seed=0).frames[0]
    W, H = 4096, 64  # a strip of the frame's horizontal field of view, square pixels
    K = f.K.copy()
    K[0, 0] *= W / 160
    K[1, 1] *= W / 160
    K[0, 2], K[1, 2] = W / 2, H / 2
    cli = client.wait_for_service(RenderView, "render_view")
    fut = cli.call_async(RenderView.Request(pose=co.T_to_pose(f.T_WC), camera_info=co.camera_info_msg(K, H, W, "v")))
    time.sleep(1.5)
    assert not fut.done()
    rc, dt = _signal_and_wait(proc, [signal.SIGINT, signal.SIGINT])
    # what is waited for: the training step or the field evaluation in flight, the save, the exit
    _assert_clean_exit(proc, rc, dt, limit_s=5.0)
    assert load_map(tmp_path / "maps" / "shutdown.map").stats.frames_added >= 1


def test_sigkill_during_save_map_leaves_the_previous_map_loadable(start, tmp_path):
    """The file as a SIGKILL would leave it, at several moments of one save (the process stopped
    with SIGSTOP and the map loaded then), then a real SIGKILL during a save."""
    from neural_mapping.mapfile import load_map
    from neural_mapping_interfaces.srv import SaveMap

    proc, client = start(**{"encoding.hash_log2_table": 18})  # a map of ~34 MB: a save takes a while
    path = tmp_path / "maps" / "room.map"
    cli = client.wait_for_service(SaveMap, "save_map")
    assert client.call_client(cli, SaveMap.Request(name="room.map"), 60).success  # the first makes the map copy
    t0 = time.monotonic()
    assert client.call_client(cli, SaveMap.Request(name="room.map"), 60).success
    t_save = time.monotonic() - t0
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"save of {path.stat().st_size / 1e6:.1f} MB: {t_save:.2f} s")
    pid = proc.proc.pid
    for frac in (0.2, 0.5, 0.8):
        fut = cli.call_async(SaveMap.Request(name="room.map"))
        time.sleep(frac * t_save)
        os.kill(pid, signal.SIGSTOP)
        try:  # what a SIGKILL now would leave: the previous map or the new one, complete
            m = load_map(path)
            assert m.stats.frames_added >= 1
        finally:
            os.kill(pid, signal.SIGCONT)
        client.wait_for(fut.done, 60, "the save to finish")
        assert fut.result().success
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    fut = cli.call_async(SaveMap.Request(name="room.map"))
    time.sleep(0.15 * t_save)
    os.kill(pid, signal.SIGKILL)
    proc.proc.wait(timeout=10)
    assert load_map(path).stats.frames_added >= 1  # the previous map, or the new one complete
    after = hashlib.sha256(path.read_bytes()).hexdigest()
    print("SIGKILL mid-save left the", "previous" if after == digest else "new", "map;", "answered" if fut.done()
          else "no answer", "; left behind:", sorted(p.name for p in path.parent.iterdir()))
