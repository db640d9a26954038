"""The web viewer in a real headless browser (Debian's chromium + chromium-driver, selenium): the page
loads and its websocket connects, the mesh appears where it projects, and a render from a camera
pose set in the browser matches `neural-mapping render` at that pose.

NM_VIEWER_SCREENSHOT=path.png also writes a screenshot of the whole page (README's docs/img/viewer.png).
"""

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("viser")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -r requirements.txt)")

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (make setup installs them when run as root; "
           "or: apt-get install -y chromium chromium-driver)")

WINDOW = (1000, 700)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, step: float = 0.1):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    """A small map of the synthetic room, trained a few seconds, saved with its keyframes."""
    from neural_mapping.config import apply_overrides, preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapfile import save_map
    from neural_mapping.mapper import Mapper

    seq = synthetic_sequence(n_frames=12, width=64, height=48, seed=0)
    cfg = apply_overrides(preset("cpu"), {
        "encoding.hash_log2_table": 12, "encoding.hash_levels": 8, "train.rays_per_step": 512, "field.hidden": 32,
        "render.render_samples": 48, "mesh.voxel_m": 0.05, "mesh.min_component_triangles": 20})
    m = Mapper(cfg)
    for f in seq.frames:
        m.add_frame(f)
        m.step(3)
    path = tmp_path_factory.mktemp("viewer") / "map.pt"
    save_map(m, path, include_keyframes=True)
    return path


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
              "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def screenshot(browser) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")).astype(np.int16)


def mesh_mask(verts, faces, T_WC, K, W, H, n=400_000):
    """Pixels covered by the mesh seen from T_WC, K: points sampled on its triangles, projected."""
    from neural_mapping.camera import invert_T

    rng = np.random.default_rng(0)
    t = rng.integers(0, len(faces), n)
    a, b = rng.random((2, n))
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    tri = verts[faces[t]]
    p = tri[:, 0] + a[:, None] * (tri[:, 1] - tri[:, 0]) + b[:, None] * (tri[:, 2] - tri[:, 0])
    pc = (invert_T(T_WC) @ np.c_[p, np.ones(n)].T).T[:, :3]
    pc = pc[pc[:, 2] > 0.05]
    uv = np.round((K @ pc.T).T[:, :2] / pc[:, 2:3]).astype(int)
    ok = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    mask = np.zeros((H, W), bool)
    mask[uv[ok, 1], uv[ok, 0]] = True
    return mask


def test_viewer_page_mesh_and_render_through_the_browser_camera(tiny_map, browser, tmp_path):
    from scipy.ndimage import binary_dilation

    from neural_mapping.cli import main as cli_main
    from neural_mapping.io.synthetic import look_at_T_WC
    from neural_mapping.mapfile import load_map, read_header
    from neural_mapping.mapper import Mapper
    from neural_mapping.online import OnlineMapper
    from neural_mapping.viewer.config import ViewerConfig
    from neural_mapping.viewer.look import camera_K, camera_T_WC, render_size
    from neural_mapping.viewer.server import Viewer

    loaded = load_map(tiny_map)
    core = OnlineMapper(Mapper(loaded.cfg), paused=True)  # an empty map first; paused: the map stays as loaded
    core.start()
    viewer = Viewer(core, ViewerConfig(port=free_port()), tick_s=0.1, duty=1.0).start()
    try:
        for name in ("frusta", "trajectory", "occupancy", "sdf slice"):  # the mesh alone for the mask test
            viewer.panels.layer[name].value = False
            viewer._set_layer(name, False)
        viewer.panels.look_rows.value = 60
        viewer.panels.look_quality.value = "full"  # compared below with `neural-mapping render` pixel for pixel
        browser.get(f"http://127.0.0.1:{viewer.port}")
        assert browser.title == "Viser"
        client = wait_for(lambda: next(iter(viewer.server.get_clients().values()), None), 20, "the websocket client")

        def camera_known():
            try:
                return client.camera.fov > 0
            except AssertionError:  # not reported yet
                return False

        wait_for(camera_known, 20, "the browser's camera")
        eye, target = np.array([0.5, -3.2, 2.6]), np.array([0.0, 0.0, 0.8])
        client.camera.up_direction = (0.0, 0.0, 1.0)
        client.camera.position = eye
        client.camera.look_at = target
        wait_for(lambda: np.allclose(client.camera.position, eye, atol=1e-4), 10, "the camera to move")
        time.sleep(1.0)
        empty = screenshot(browser)

        core.swap(loaded)  # load the map: the viewer meshes it and sends the chunks
        wait_for(lambda: viewer.mesh_updates and viewer.mesh_updates[-1].triangles > 0
                 and viewer._extractor.stats.tiles_pending == 0, 30, "the whole mesh")
        v, f, _ = viewer._extractor.extract_arrays()  # the cached mesh it sent (nothing changed since)
        H, W = empty.shape[:2]
        assert (client.camera.image_width, client.camera.image_height) == (W, H)
        T = camera_T_WC(client.camera.wxyz, client.camera.position)
        mask = mesh_mask(v, f, T, camera_K(client.camera.fov, W, H), W, H)
        region = np.zeros((H, W), bool)
        region[int(0.3 * H):, : int(0.6 * W)] = True  # away from the GUI panel (right) and the notice (top left)
        inside = binary_dilation(mask, iterations=1) & region
        outside = ~binary_dilation(mask, iterations=6) & region
        assert inside.sum() > 0.05 * region.sum() and outside.sum() > 0.02 * region.sum()

        def drawn():
            shot = screenshot(browser)
            changed = np.abs(shot - empty).max(axis=2) > 30
            return (changed[inside].mean(), changed[outside].mean()) if changed[inside].mean() > 0.6 else None

        frac_in, frac_out = wait_for(drawn, 20, "the mesh to be drawn", step=0.5)
        assert frac_out < 0.1, f"the page changed where the mesh is not ({frac_out:.2f})"

        # a render from a camera pose set in the browser: the pose comes back from the browser as T_WC
        eye, target = np.array([-0.8, -1.2, 1.4]), np.array([0.6, 1.0, 0.7])
        T_set = look_at_T_WC(eye, target)
        n0 = viewer.look.renders
        client.camera.position = eye
        client.camera.look_at = target
        wait_for(lambda: viewer.look.renders > n0 and np.allclose(viewer.look.last_request.T_WC, T_set, atol=1e-3),
                 30, "the look-through render from the set pose")
        req, img = viewer.look.last_request, viewer.look.last_image
        assert abs(req.fov_rad - client.camera.fov) < 1e-9 and req.mode == "color"
        Wr, Hr = render_size(req.height, req.aspect)
        assert img.shape == (Hr, Wr, 3) and Hr == 60
        K = camera_K(req.fov_rad, Wr, Hr)
        pose = tmp_path / "pose.txt"
        np.savetxt(pose, req.T_WC)
        out = tmp_path / "render"
        assert cli_main(["render", str(tiny_map), "--pose", str(pose), "--intrinsics", *map(str, K[[0, 1, 0, 1], [0, 1, 2, 2]]),
                         "--size", str(Wr), str(Hr), "--out", str(out)]) == 0
        from PIL import Image

        ref = np.asarray(Image.open(out / "color.png")).astype(np.int16)
        depth = np.load(out / "depth.npy")
        assert (depth > 0).mean() > 0.2, f"the set pose should look at the mapped room ({(depth > 0).mean():.3f} hit)"
        assert np.abs(ref - img).max() <= 1, "the viewer's render differs from `neural-mapping render` at its pose"
        assert read_header(tiny_map)  # the file the CLI rendered is the map the viewer showed

        if os.environ.get("NM_VIEWER_SCREENSHOT"):  # optionally of another map (NM_VIEWER_SCREENSHOT_MAP)
            if os.environ.get("NM_VIEWER_SCREENSHOT_MAP"):
                core.swap(load_map(os.environ["NM_VIEWER_SCREENSHOT_MAP"]))
                n = len(viewer.mesh_updates)
                wait_for(lambda: len(viewer.mesh_updates) > n and viewer._extractor.stats.tiles_pending == 0, 120,
                         "the screenshot map's mesh")
            for name in ("frusta", "trajectory", "occupancy", "sdf slice"):
                viewer.panels.layer[name].value = True
                viewer._set_layer(name, True)
            viewer.update_planes()
            client.camera.position = np.array([0.4, -3.4, 3.4])
            client.camera.look_at = np.array([0.0, 0.0, 0.5])
            time.sleep(6.0)
            browser.save_screenshot(str(Path(os.environ["NM_VIEWER_SCREENSHOT"])))
    finally:
        viewer.stop()
        core.stop()
