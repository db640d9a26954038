"""Viewer benchmarks (benchmarks/RESULTS.md): ``python -m neural_mapping.viewer.bench``.

1. training steps/s of a live map with and without the viewer and a headless browser connected
   (the browser camera moved every few seconds, so the look-through panel renders), runs alternated;
2. a 500 k-triangle coloured mesh from ``MeshChunks.update`` until the browser has drawn it (a
   render requested from the browser returns only after it processed the messages sent before);
3. the look-through render at 320x240 on the trained map (paused): the preview
   (:mod:`neural_mapping.preview_render`, the panel's default) against the full render
   (``Mapper.render``, what ``neural-mapping render`` writes), with their depth agreement.

``--only render --map MAP`` measures 3. alone on a saved map; ``--only mesh`` 2. alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _browser(port: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
              "--disable-dev-shm-usage", "--window-size=1000,700"):
        o.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _DECODED_HOOK})
    d.get(f"http://127.0.0.1:{port}")
    return d


#: viser's client receives the websocket in a Web Worker, which decodes each message (zstd +
#: msgpack, binary buffers kept raw) and posts it to the page. This hook, installed before the
#: page's scripts run, logs [Date.now(), bytes of the binary buffers] of every message the page gets
#: from a worker: the time the page holds the decoded message (GLB parse, upload, draw come after).
_DECODED_HOOK = """
(() => {
  window.__nm_msgs = [];
  const size = (x, d) => {
    if (!x || d > 8) return 0;
    if (x instanceof ArrayBuffer || ArrayBuffer.isView(x)) return x.byteLength;
    if (typeof x !== "object") return 0;
    let s = 0;
    for (const k in x) s += size(x[k], d + 1);
    return s;
  };
  const W = window.Worker;
  window.Worker = class extends W {
    constructor(...a) {
      super(...a);
      this.addEventListener("message", (e) => window.__nm_msgs.push([Date.now(), size(e.data, 0)]));
    }
  };
})();
"""


def _client(viewer, timeout=30.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        for c in viewer.server.get_clients().values():
            try:
                if c.camera.fov > 0:
                    return c
            except AssertionError:
                pass
        time.sleep(0.1)
    raise RuntimeError("no browser client")


def training_run(seq, cfg, seconds: float, with_viewer: bool, port: int, rate_hz: float = 15.0,
                 hidden_tab: bool = False) -> dict:
    """Steps/s of a live map over ``seconds``; ``with_viewer``: the viewer and a headless browser on it,
    the camera moved every 3 s; ``hidden_tab``: the viewer's tab is put in the background once
    connected (the page stops drawing, the websocket stays: the server's cost without the software
    WebGL of a browser on the same 2 cores), the camera moves reach the look-through panel directly."""
    import threading

    from neural_mapping.mapper import Mapper
    from neural_mapping.online import OnlineMapper
    from neural_mapping.viewer.config import ViewerConfig
    from neural_mapping.viewer.live import feed
    from neural_mapping.viewer.look import LookRequest
    from neural_mapping.viewer.scene import Trajectory
    from neural_mapping.viewer.server import Viewer

    core = OnlineMapper(Mapper(cfg))
    core.start()
    viewer = browser = None
    traj = Trajectory()
    if with_viewer:
        viewer = Viewer(core, ViewerConfig(port=port)).start()
        traj = viewer.trajectory
        browser = _browser(port)
        client = _client(viewer)
        if hidden_tab:
            browser.switch_to.new_window("tab")
            browser.get("about:blank")
    stop = threading.Event()
    t0 = time.perf_counter()
    feeder = threading.Thread(target=feed, args=(core, seq.frames, traj, stop, rate_hz), daemon=True)
    feeder.start()
    k = 0
    while time.perf_counter() - t0 < seconds:
        time.sleep(0.5)
        if with_viewer and int(time.perf_counter() - t0) // 3 > k:  # move the browser camera every 3 s
            k += 1
            f = seq.frames[(k * 7) % len(seq.frames)]
            if hidden_tab:
                viewer.look.camera_moved(LookRequest(f.T_WC, np.radians(60.0), 4 / 3, 240, "color"))
            else:
                client.camera.position = f.T_WC[:3, 3]
                client.camera.look_at = f.T_WC[:3, 3] + f.T_WC[:3, 2]
    steps, wall = core.mapper.stats.steps, time.perf_counter() - t0
    out = {"viewer": with_viewer, "hidden_tab": hidden_tab, "steps": steps, "seconds": wall, "steps_per_s": steps / wall,
           "frames": core.mapper.stats.frames_added}
    if viewer is not None:
        out.update(look_renders=viewer.look.renders, look_last=viewer.look.last_info,
                   mesh_updates=len(viewer.mesh_updates), mesh_seconds=[round(u.seconds, 2) for u in viewer.mesh_updates],
                   triangles=viewer.status.triangles)
    stop.set()
    if browser is not None:
        browser.quit()
    if viewer is not None:
        viewer.stop()
    core.stop(timeout=10)
    out["mapper"] = core.mapper
    return out


def _decoded(browser, t_from: float) -> list[tuple[float, int]]:
    """(wall time s, bytes) of the messages the page received decoded from viser's websocket worker
    after ``t_from`` (wall time), drained (see _DECODED_HOOK)."""
    msgs = browser.execute_script("return window.__nm_msgs ? window.__nm_msgs.splice(0) : null")
    if msgs is None:
        raise RuntimeError("the page has no worker-message hook")
    return [(t / 1000.0, int(n)) for t, n in msgs if t / 1000.0 >= t_from]


def mesh_to_browser(port: int, n_side: int = 500) -> dict:
    """A 2 x n_side^2 triangle wavy coloured sheet (500 k for 500) sent by MeshChunks: seconds until
    the server has queued it (``update_s``), until the page holds its last chunk decoded
    (``received_s``: viser's websocket worker decoded it and posted it to the page, see
    _DECODED_HOOK; ``first_chunk_received_s`` for the first), and until the browser has drawn it
    (``drawn_s``: a render requested from the browser returns after it processed the messages sent
    before, parse, upload and draw included); then one corner changed (2 chunks resent)."""
    import viser

    from neural_mapping.viewer.mesh_chunks import MeshChunks

    xs = np.linspace(-2.5, 2.5, n_side + 1)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    v = np.c_[X.ravel(), Y.ravel(), 0.1 * np.sin(3 * X.ravel()) * np.cos(2 * Y.ravel())]
    i = (np.arange(n_side)[:, None] * (n_side + 1) + np.arange(n_side)[None, :]).ravel()
    f = np.r_[np.c_[i, i + n_side + 1, i + 1], np.c_[i + 1, i + n_side + 1, i + n_side + 2]]
    c = np.c_[(X.ravel() + 2.5) / 5, (Y.ravel() + 2.5) / 5, np.full(len(v), 0.5)]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    browser = _browser(port)
    out = {"triangles": int(len(f))}
    try:
        t_end = time.monotonic() + 30
        while not server.get_clients() and time.monotonic() < t_end:
            time.sleep(0.1)
        client = next(iter(server.get_clients().values()))
        client.get_render(64, 64, timeout=30)  # the page is up and drawing
        chunks = MeshChunks(server)
        for label, verts in (("", v), ("changed_", None)):
            if verts is None:
                verts = v.copy()
                verts[:50, 2] += 0.05  # one corner changes
            _decoded(browser, 0.0)  # drop what came before
            t_wall, t0 = time.time(), time.perf_counter()
            u = chunks.update(verts, f, c)
            t_sent = time.perf_counter() - t0
            client.get_render(64, 64, timeout=120)
            t_drawn = time.perf_counter() - t0
            frames = [fr for fr in _decoded(browser, t_wall) if fr[1] > 4096]  # the mesh messages
            out.update({f"{label}chunks_sent": u.sent, f"{label}bytes_sent": u.bytes_sent,
                        f"{label}update_s": round(t_sent, 3), f"{label}drawn_s": round(t_drawn, 3),
                        f"{label}received_s": round(max(t for t, _ in frames) - t_wall, 3) if frames else None,
                        f"{label}first_chunk_received_s": round(min(t for t, _ in frames) - t_wall, 3) if frames else None,
                        f"{label}bytes_received": int(sum(n for _, n in frames))})
        out["chunks"] = len(chunks._handles)
    finally:
        browser.quit()
        server.stop()
    return out


def render_map():
    """The map of the RESULTS.md render figures: the synthetic room, 60 frames at 160x120, cpu preset,
    4 steps after every second frame and 60 more (180 steps)."""
    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence
    from neural_mapping.mapper import Mapper

    seq = synthetic_sequence(n_frames=60, width=160, height=120, seed=0)
    m = Mapper(preset("cpu"))
    for i, f in enumerate(seq.frames):
        m.add_frame(f)
        if i % 2 == 0:
            m.step(4)
    m.step(60)
    return m


def render_compare(mapper, n: int = 3, rows: int = 240) -> dict:
    """Seconds (wall, and CPU time of this process: on a loaded machine the CPU time is the steadier
    figure) of the preview and of the full render of 320x240 images from ``n`` keyframe poses, and
    the preview's depth against the full one on pixels both hit."""
    from neural_mapping.preview_render import candidates, preview
    from neural_mapping.viewer.look import camera_K, render_size

    kfs = mapper.keyframes.keyframes
    poses = [kfs[(i + 1) * len(kfs) // (n + 1)].T_WC_np for i in range(n)]
    W, H = render_size(rows, 4 / 3)
    K = camera_K(np.radians(60.0), W, H)
    out = {"size": [W, H], "threads": __import__("torch").get_num_threads(), "preview_s": [], "full_s": [],
           "preview_cpu_s": [], "full_cpu_s": [], "preview_first_pass_s": [], "median_abs_depth_diff_m": [], "p90_abs_depth_diff_m": [],
           "hit_full": [], "hit_both": [], "preview_samples": []}
    for T in poses:
        t0 = time.perf_counter()
        preview(mapper, T, K, H, W, cand=candidates(mapper), scale=2)  # the panel's first pass
        out["preview_first_pass_s"].append(round(time.perf_counter() - t0, 3))
        t0, c0 = time.perf_counter(), time.process_time()
        p = preview(mapper, T, K, H, W, cand=candidates(mapper))
        out["preview_s"].append(round(time.perf_counter() - t0, 3))
        out["preview_cpu_s"].append(round(time.process_time() - c0, 3))
        t0, c0 = time.perf_counter(), time.process_time()
        r = mapper.render(T, K, H, W)
        out["full_s"].append(round(time.perf_counter() - t0, 3))
        out["full_cpu_s"].append(round(time.process_time() - c0, 3))
        both = (r.depth > 0) & p.hit
        d = np.abs(r.depth - p.depth)[both]
        out["median_abs_depth_diff_m"].append(round(float(np.median(d)), 5) if len(d) else None)
        out["p90_abs_depth_diff_m"].append(round(float(np.percentile(d, 90)), 5) if len(d) else None)
        out["hit_full"].append(round(float((r.depth > 0).mean()), 4))
        out["hit_both"].append(round(float(both.mean()), 4))
        out["preview_samples"].append(int(p.stats["samples"]))
        out.setdefault("preview_phase_s", []).append(p.stats.get("phase_s"))
    # the machine's speed at the time: 1 M field values through the fast path (the preview's unit of work)
    import torch

    from neural_mapping import fastquery

    x = torch.rand(1_000_000, 3) * 4 - 2
    t0 = time.perf_counter()
    fastquery.value(mapper.field, x)
    out["field_1M_values_s"] = round(time.perf_counter() - t0, 3)
    return out


def main(argv=None) -> int:
    from neural_mapping.config import preset
    from neural_mapping.io.synthetic import synthetic_sequence

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="wall time of each training run")
    ap.add_argument("--pairs", type=int, default=2, help="runs without and with the viewer, alternated")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--hidden-tab", action="store_true", help="the viewer's tab in the background (see training_run)")
    ap.add_argument("--skip-mesh", action="store_true", help="no mesh-to-browser measurement")
    ap.add_argument("--only", choices=("training", "mesh", "render"), help="one measurement alone")
    ap.add_argument("--map", help="--only render: a saved map with keyframes (else render_map() trains one, ~1 min)")
    a = ap.parse_args(argv)
    seq = synthetic_sequence(n_frames=150, width=160, height=120, seed=0)
    cfg = preset("cpu")
    if a.only == "render":
        from neural_mapping.mapfile import load_map

        m = load_map(a.map) if a.map else render_map()
        print(json.dumps({"load": os.getloadavg(), "render": render_compare(m)}), flush=True)
        return 0
    if a.only == "training":
        runs = []
        for _ in range(a.pairs):
            for wv in (False, True):
                r = training_run(seq, cfg, a.seconds, wv, a.port, hidden_tab=a.hidden_tab)
                r.pop("mapper")
                runs.append(r)
                print(json.dumps(r, default=float), flush=True)
        b = np.mean([r["steps_per_s"] for r in runs if not r["viewer"]])
        w = np.mean([r["steps_per_s"] for r in runs if r["viewer"]])
        print(json.dumps({"overhead_pct": 100.0 * (1.0 - w / b), "load": os.getloadavg()}), flush=True)
        return 0
    if a.only == "mesh":
        print(json.dumps({"load": os.getloadavg(), "mesh": mesh_to_browser(a.port + 1)}), flush=True)
        return 0
    res = {"load_before": os.getloadavg(), "runs": []}
    mapper = None
    for _ in range(a.pairs):
        for wv in (False, True):
            r = training_run(seq, cfg, a.seconds, wv, a.port, hidden_tab=a.hidden_tab)
            mapper = r.pop("mapper")
            res["runs"].append(r)
            print(json.dumps(r), flush=True)
    base = [r["steps_per_s"] for r in res["runs"] if not r["viewer"]]
    withv = [r["steps_per_s"] for r in res["runs"] if r["viewer"]]
    res["overhead_pct"] = 100.0 * (1.0 - np.mean(withv) / np.mean(base))
    if not a.skip_mesh:
        res["mesh"] = mesh_to_browser(a.port + 1)
        print(json.dumps(res["mesh"]), flush=True)
    res["render_320x240"] = render_compare(mapper)
    res["load_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, default=float), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
