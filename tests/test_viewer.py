"""The web viewer without a browser: the camera convention, mesh chunks, the look-through debounce,
the config and the controls. The browser test is tests/test_viewer_browser.py."""

import logging
import math
import socket
import time

import numpy as np
import pytest

pytest.importorskip("viser")

from neural_mapping.camera import invert_T  # noqa: E402
from neural_mapping.config import ConfigError, MapperConfig, to_flat  # noqa: E402
from neural_mapping.io.synthetic import look_at_T_WC  # noqa: E402
from neural_mapping.viewer.config import ViewerConfig  # noqa: E402
from neural_mapping.viewer.look import (LookRequest, LookThrough, R_to_wxyz, camera_K, camera_T_WC,  # noqa: E402
                                        quat_wxyz_to_R, render_size)
from neural_mapping.viewer.mesh_chunks import MeshChunks, split_chunks  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project(T_WC, K, pts_W):
    p = (invert_T(T_WC) @ np.c_[pts_W, np.ones(len(pts_W))].T).T[:, :3]
    return (K @ p.T).T[:, :2] / p[:, 2:3], p[:, 2]


def test_browser_camera_is_T_WC_in_opencv_axes_and_K_follows_the_vertical_fov():
    eye, target = np.array([1.0, -2.0, 1.5]), np.array([0.3, 0.4, 0.8])
    T = look_at_T_WC(eye, target)  # OpenCV axes, z up: what viser reports as (wxyz, position)
    wxyz = R_to_wxyz(T[:3, :3])
    assert wxyz[0] >= 0 and np.isclose(np.linalg.norm(wxyz), 1.0)
    T2 = camera_T_WC(wxyz, eye)
    np.testing.assert_allclose(T2, T, atol=1e-12)
    # viser's documented frame: look direction = R[:, 2] (+z), up on screen = -R[:, 1] (-y)
    R = quat_wxyz_to_R(wxyz)
    np.testing.assert_allclose(R[:, 2], (target - eye) / np.linalg.norm(target - eye), atol=1e-12)
    assert R[:, 1] @ np.array([0, 0, 1.0]) < 0  # image y (down) points away from world up
    fov, W, H = math.radians(50.0), 160, 120
    K = camera_K(fov, W, H)
    uv, z = project(T, K, target[None])
    np.testing.assert_allclose(uv[0], [(W - 1) / 2, (H - 1) / 2], atol=1e-9)  # the look-at point is the centre
    # a point on the top edge of the vertical fov lands on the top border of the image (v = -0.5)
    up = -R[:, 1]
    top = eye + (R[:, 2] + math.tan(fov / 2) * up) * 2.0
    uv, z = project(T, K, top[None])
    np.testing.assert_allclose(uv[0], [(W - 1) / 2, -0.5], atol=1e-9)
    assert render_size(240, 4 / 3) == (320, 240)
    with pytest.raises(ValueError):
        camera_K(0.0, W, H)


def test_quaternion_order_is_scalar_first():
    np.testing.assert_allclose(quat_wxyz_to_R([1, 0, 0, 0]), np.eye(3))
    c = math.cos(math.pi / 4)
    np.testing.assert_allclose(quat_wxyz_to_R([c, 0, 0, c]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


class FakeHandle:
    def __init__(self, scene, name, nfaces):
        self.scene, self.name, self.nfaces, self.visible = scene, name, nfaces, True

    def remove(self):
        self.scene.removed.append(self.name)


class FakeScene:
    def __init__(self):
        self.sent, self.removed = [], []

    def add_mesh_simple(self, name, v, f, **kw):
        self.sent.append((name, len(f)))
        return FakeHandle(self, name, len(f))

    add_mesh_trimesh = None


class FakeServer:
    def __init__(self):
        self.scene = FakeScene()


def grid_mesh(n, z=0.0, x0=0.0):
    xs = np.arange(n + 1) * 0.1 + x0
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    v = np.c_[X.ravel(), Y.ravel(), np.full(X.size, z)]
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    a, b, c, d = i, i + 1, i + n + 1, i + n + 2
    f = np.r_[np.c_[a.ravel(), c.ravel(), b.ravel()], np.c_[b.ravel(), c.ravel(), d.ravel()]]
    return v, f


def test_chunks_keep_every_triangle_and_only_changed_chunks_are_resent():
    v, f = grid_mesh(30)  # 3 m x 3 m: chunks of 1.28 m -> 3 x 3
    parts = split_chunks(v, f, None, 1.28)
    assert len(parts) == 9 and sum(len(p[1]) for p in parts.values()) == len(f)
    tri = lambda vv, ff: {tuple(np.round(vv[t].astype(float), 4).ravel().tolist()) for t in ff}  # noqa: E731
    assert set().union(*(tri(*p[:2]) for p in parts.values())) == tri(v, f)
    srv = FakeServer()
    mc = MeshChunks(srv, chunk_m=1.28)
    u = mc.update(v, f, None)
    assert (u.sent, u.removed, u.chunks, u.triangles_sent) == (9, 0, 9, len(f))
    assert mc.update(v, f, None).sent == 0  # nothing changed: nothing resent
    v2 = v.copy()
    v2[0, 2] += 0.01  # move one vertex in the chunk at the origin
    u = mc.update(v2, f, None)
    assert u.sent == 1 and srv.scene.sent[-1][0] == mc.name((0, 0, 0))
    keep = np.all(v[f][:, :, 0].mean(1, keepdims=True) < 1.28, axis=1)  # drop the chunks with x >= 1.28
    u = mc.update(v2, f[keep], None)
    assert u.removed == 6 and u.sent == 0 and u.chunks == 3


def test_look_through_waits_for_the_camera_to_settle_and_bounds_its_rate_and_duty():
    done = []
    lt = LookThrough(lambda fn: fn("map"), lambda img, info: done.append(info), settle_s=0.2, min_interval_s=0.2,
                     duty=0.1)
    import neural_mapping.viewer.look as look

    calls = []

    def fake_render(run_job, req):  # 0.05 s of rendering: at duty 0.1 the next may start 0.45 s later
        calls.append(req)
        time.sleep(0.05)
        return np.zeros((2, 2, 3), np.uint8), {"n": len(calls)}

    orig, look.render_look = look.render_look, fake_render
    try:
        req = LookRequest(np.eye(4), 1.0, 4 / 3, 60, "color", "full")
        lt.camera_moved(req)
        assert not lt.poll()  # still moving
        time.sleep(0.25)
        assert lt.poll() and len(calls) == 1 and done == [{"n": 1}]
        t_done = time.monotonic()
        assert lt._next_ok - t_done >= 0.4  # 9 x its >= 0.05 s
        assert not lt.poll()  # same camera: nothing new
        T = np.eye(4)
        T[0, 3] = 0.1
        lt.camera_moved(LookRequest(T, 1.0, 4 / 3, 60, "color", "full"))
        time.sleep(0.25)
        assert not lt.poll()  # settled, but rendering would exceed its duty
        while not lt.poll():
            assert time.monotonic() - t_done < 3.0
            time.sleep(0.01)
        assert time.monotonic() - t_done >= 0.4 and len(calls) == 2 and lt.last_request.T_WC[0, 3] == 0.1
        time.sleep(1.0)
        lt.force()
        assert lt.poll() and len(calls) == 3  # forced: the same camera again (new mode, new map)
        # a preview: every second pixel first, shown, then every pixel
        time.sleep(1.0)
        lt.camera_moved(LookRequest(T, 1.0, 4 / 3, 60, "color", "preview"))
        time.sleep(0.25)
        assert lt.poll() and [c.scale for c in calls[3:]] == [2, 1] and len(done) == 5
        assert lt.last_request.scale == 1 and lt.last_request.quality == "preview"
    finally:
        look.render_look = orig


def test_a_render_in_bands_equals_one_render(monkeypatch):
    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper
    import neural_mapping.viewer.look as look
    from neural_mapping.viewer.look import depth_image, render_look

    seq = synthetic_sequence(n_frames=10, width=32, height=24, seed=0)
    m = Mapper(apply_overrides(preset("cpu"), {"encoding.hash_log2_table": 10, "encoding.hash_levels": 2,
                                                "field.hidden": 8, "render.render_samples": 8,
                                                "train.rays_per_step": 64}))
    for f in seq.frames[:3]:
        m.add_frame(f)
    m.step(2)
    T = seq.frames[1].T_WC
    monkeypatch.setattr(look, "BAND_PIXELS", 250)
    req = LookRequest(T, math.radians(60), 1.5, 24, "color", "full")  # 36 x 24: bands of 6 rows
    jobs = []
    img, info = render_look(lambda fn: jobs.append(1) or fn(m), req)
    assert info["bands"] == len(jobs) == 4
    r = m.render(T, camera_K(req.fov_rad, 36, 24), 24, 36)
    np.testing.assert_array_equal(img, (np.clip(r.color, 0, 1) * 255 + 0.5).astype(np.uint8))
    with pytest.raises(ValueError):
        render_look(lambda fn: fn(m), LookRequest(T, 1.0, 1.5, 24, "color", "best"))
    d = depth_image(np.array([[0.0, 1.0], [2.0, 3.0]], np.float32))
    assert (d[0, 0] == 0).all() and d[0, 1, 0] == 1.0 and np.isclose(d[1, 1, 0], 0.2) and d[0, 1, 0] > d[1, 0, 0] > d[1, 1, 0]


def test_viewer_config_is_the_viewer_parameter_group():
    flat = to_flat(MapperConfig())
    assert {k: v for k, v in flat.items() if k.startswith("viewer.")} == {
        "viewer.enabled": False, "viewer.port": 8080, "viewer.host": "127.0.0.1", "viewer.allow_control": False}
    assert not ViewerConfig().exposed and ViewerConfig(host="0.0.0.0").exposed
    with pytest.raises(ConfigError):
        ViewerConfig(port=0)


def empty_core():
    from neural_mapping.config import preset
    from neural_mapping.mapper import Mapper
    from neural_mapping.online import OnlineMapper

    return OnlineMapper(Mapper(preset("cpu")))


def test_exposed_host_warns_and_controls_exist_only_when_allowed(caplog, tmp_path):
    from neural_mapping.viewer.server import Viewer

    core = empty_core()
    with caplog.at_level(logging.WARNING):
        v = Viewer(core, ViewerConfig(host="0.0.0.0", port=free_port(), allow_control=True)).start()
    try:
        assert any("reachable from other machines" in r.message and "pause, save and reset" in r.message
                   for r in caplog.records)
        assert v.panels.pause_btn is not None and v.panels.reset_btn is not None
        assert v._pause(True) == "training paused" and core.paused
        assert v._pause(False) == "training resumed" and not core.paused
        assert v._save(str(tmp_path / "saved.pt")).startswith("saved")
        from neural_mapping.mapfile import load_map

        assert load_map(tmp_path / "saved.pt").cfg == core.mapper.cfg
        lineage = core.lineage
        assert v._reset() == "map reset" and core.lineage == lineage + 1
    finally:
        v.stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        v = Viewer(core, ViewerConfig(port=free_port())).start()
    try:
        assert not caplog.records
        assert v.panels.controls is None and v.panels.pause_btn is None
    finally:
        v.stop()


def test_live_input_is_fed_at_its_pace_into_the_core_and_the_trajectory(tmp_path):
    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.viewer.live import start_live
    from neural_mapping.viewer.server import Viewer

    seq = synthetic_sequence(n_frames=8, width=48, height=36, seed=0)
    cfg = apply_overrides(preset("cpu"), {"encoding.hash_log2_table": 12, "encoding.hash_levels": 4, "field.hidden": 16,
                                          "train.rays_per_step": 256})
    t0 = time.monotonic()
    core, viewer, feeder = start_live(seq.frames, cfg, lambda c: Viewer(c, ViewerConfig(port=free_port())).start(),
                                      rate_hz=20.0)
    try:
        feeder.join(timeout=30)
        assert not feeder.is_alive() and time.monotonic() - t0 >= 7 / 20.0  # 8 frames at 20 Hz: at their pace
        viewer.trajectory.observe(seq.frames[3])  # an older frame reported again (the loop's poll): ignored
        assert len(viewer.trajectory.points()) == 8  # every frame fed is on the trajectory, once, in order
        np.testing.assert_allclose(viewer.trajectory.points()[-1], seq.frames[-1].T_WC[:3, 3])
        assert core.wait_until_drained(30) and core.stats().frames_received == 8
    finally:
        viewer.stop()
        core.stop()


def test_view_command_on_a_map_file_serves_the_page(tmp_path):
    import threading
    import urllib.request

    from neural_mapping.cli import main
    from neural_mapping.mapfile import save_map

    core = empty_core()
    save_map(core.mapper, tmp_path / "map.pt")
    port, pages = free_port(), []

    def fetch():
        for _ in range(100):
            try:
                pages.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read())
                return
            except OSError:
                time.sleep(0.1)

    t = threading.Thread(target=fetch)
    t.start()
    assert main(["view", str(tmp_path / "map.pt"), "--port", str(port), "--seconds", "3"]) == 0
    t.join()
    assert pages and b"<html" in pages[0].lower()
    assert main(["view", str(tmp_path / "missing.pt")]) == 2  # one clear line, exit code 2


def read_glb(data: bytes) -> dict:
    """The accessors of a GLB as numpy arrays by attribute name (a minimal reader: what mesh_glb writes)."""
    import json
    import struct

    magic, version, total = struct.unpack_from("<III", data, 0)
    assert magic == 0x46546C67 and version == 2 and total == len(data)
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A
    gltf = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942
    binary = data[28 + jlen:28 + jlen + blen]
    types = {5120: np.int8, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}

    def accessor(i):
        a = gltf["accessors"][i]
        bv = gltf["bufferViews"][a["bufferView"]]
        dt, k = np.dtype(types[a["componentType"]]), width[a["type"]]
        stride = bv.get("byteStride", dt.itemsize * k)
        assert stride % 4 == 0 or a["type"] == "SCALAR"  # vertex attributes 4-byte aligned
        raw = np.frombuffer(binary, np.uint8, bv["byteLength"], bv["byteOffset"]).reshape(a["count"], -1)
        x = raw[:, :dt.itemsize * k].copy().view(dt).reshape(a["count"], k)
        if a.get("normalized"):
            x = np.maximum(x / float(np.iinfo(dt).max), -1.0)
        return x

    prim = gltf["meshes"][0]["primitives"][0]
    out = {name: accessor(i) for name, i in prim["attributes"].items()}
    out["indices"] = accessor(prim["indices"]).reshape(-1, 3)
    out["gltf"] = gltf
    return out


def test_glb_keeps_the_mesh_with_compact_types():
    from neural_mapping.viewer.glb import mesh_glb
    from neural_mapping.viewer.mesh_chunks import vertex_normals

    v, f = grid_mesh(20, z=0.3)
    v[:, 2] += 0.05 * np.sin(v[:, 0] * 5)
    c = (np.random.default_rng(0).random((len(v), 3)) * 255).astype(np.uint8)
    n = vertex_normals(v.astype(np.float32), f)
    g = read_glb(mesh_glb(v, f, c, n))
    np.testing.assert_array_equal(g["POSITION"], v.astype(np.float32))
    np.testing.assert_array_equal(g["indices"], f)
    np.testing.assert_array_equal(g["COLOR_0"][:, :3] * 255, c)
    assert np.abs(g["NORMAL"] - n).max() <= 0.5 / 127 + 1e-6
    gl = g["gltf"]
    assert gl["materials"][0]["doubleSided"] and "KHR_mesh_quantization" in gl["extensionsRequired"]
    assert gl["accessors"][3]["componentType"] == 5123  # < 65536 vertices: uint16 indices
    assert len(mesh_glb(v, f, c, n)) < 34 * len(v) + 2 * 6 * len(f) + 2000
    # 65536 vertices or more: uint32 indices
    big_v = np.random.default_rng(1).random((70000, 3)).astype(np.float32)
    big_f = np.array([[0, 1, 69999]])
    g = read_glb(mesh_glb(big_v, big_f, np.zeros((70000, 3), np.uint8), np.tile([0, 0, 1.0], (70000, 1))))
    np.testing.assert_array_equal(g["indices"], big_f)
    assert g["gltf"]["accessors"][3]["componentType"] == 5125
