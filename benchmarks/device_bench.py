"""The GPU figures of issue 15 in one run (driven by benchmarks/device_check.sh).

For each measurement, the fused path (Triton hash-grid kernels on CUDA; the C++ kernel on the CPU)
and the pure-PyTorch path (``NEURAL_MAPPING_NO_TRITON`` semantics: hashgrid_triton.set_enabled(False),
and the CPU kernel off) are run in the same process on the same scene, and their ratio is reported:

- training: steps/s and sample points/s of ``Mapper.step`` on the scene's frames (all integrated first);
- online: the frames fed at 30 Hz through ``runner.run_mapping(realtime=True)`` (the node's OnlineMapper):
  frames integrated (%) and training steps/s alongside;
- query: sdf + gradient points/s (``Mapper.query(want_gradient=True)``, host arrays in and out);
- mesh: seconds for the mesh of the observed region at 2 cm (``MeshExtractor.extract_arrays(full=True)``);
- render: seconds for a colour + depth image at the scene's size (``Mapper.render``).

Writes ``device_check.json`` and ``device_check.md`` (the printed table) into ``--out``.
``--cpu-smoke``: the same on the CPU with tiny sizes (a CI test, tests/test_device_check.py), figures
that prove only that the script runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from neural_mapping import hashgrid_triton  # noqa: E402
from neural_mapping.config import MapperConfig, apply_overrides, preset  # noqa: E402
from neural_mapping.frame import Frame  # noqa: E402
from neural_mapping.mapper import Mapper  # noqa: E402

#: issue 15's targets on an H100/H200 (for the table; the smoke run is not held to them)
TARGETS = {
    "train_steps_per_s": ">= 30",
    "train_points_per_s": ">= 50e6",
    "online_integrated_pct": "100",
    "online_steps_per_s": ">= 30",
    "query_points_per_s": ">= 500e6",
    "mesh_s": "<= 0.1 (2 cm)",
    "render_s": "<= 0.020",
}


@dataclasses.dataclass
class Sizes:
    device: str
    cfg: dict
    train_frames: int
    warmup_steps: int
    train_steps: int
    online_s: float
    online_hz: float
    query_points: int
    mesh_voxel_m: float
    render_repeats: int
    scene_frames: int
    scene_size: tuple


GPU = Sizes("cuda", dict(preset_name="gpu"), train_frames=60, warmup_steps=20, train_steps=200, online_s=10.0,
            online_hz=30.0, query_points=4_000_000, mesh_voxel_m=0.02, render_repeats=5, scene_frames=60,
            scene_size=(640, 480))
SMOKE = Sizes("cpu", dict(overrides={"device": "cpu", "train.rays_per_step": 256, "render.n_stratified": 4,
                                     "render.n_surface": 4, "encoding.hash_log2_table": 12,
                                     "encoding.hash_levels": 4, "field.hidden": 16, "render.render_samples": 16}),
              train_frames=4, warmup_steps=1, train_steps=3, online_s=1.0, online_hz=30.0, query_points=5000,
              mesh_voxel_m=0.25, render_repeats=1, scene_frames=6, scene_size=(64, 48))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_cfg(s: Sizes) -> MapperConfig:
    if "preset_name" in s.cfg:
        return preset(s.cfg["preset_name"])
    return apply_overrides(MapperConfig(), s.cfg["overrides"])


def set_path(fused: bool, mapper: Mapper | None = None) -> None:
    """Fused kernels on (Triton on CUDA, the C++ kernel on the CPU) or off (pure PyTorch)."""
    hashgrid_triton.set_enabled(fused)
    if mapper is not None:
        for mod in mapper.field.modules():
            if hasattr(mod, "fast_cpu_kernel"):
                mod.fast_cpu_kernel = fused


def load_scene(path: Path, s: Sizes) -> list[Frame]:
    """The benchmark scene: a 3dmatch folder (carried to the GPU machine in .bench/scene) or, when absent,
    generated (the synthetic room with the Kinect model; needs open3d)."""
    from neural_mapping.io.datasets import read_3dmatch

    if not (path / "camera-intrinsics.txt").is_file():
        from neural_mapping.io.datasets import write_3dmatch

        try:
            from neural_mapping.io.synthetic import synthetic_sequence  # open3d's ray casting
        except ImportError as e:
            raise SystemExit(f"[bench] no scene at {path} and it cannot be rendered here ({e}): run "
                             f"'bash benchmarks/device_check.sh --prepare' where open3d is installed and carry .bench")

        w, h = s.scene_size
        print(f"[bench] generating the scene: {s.scene_frames} frames {w}x{h}, kinect sensor -> {path}", flush=True)
        seq = synthetic_sequence(n_frames=s.scene_frames, width=w, height=h, sensor="kinect")
        path.mkdir(parents=True, exist_ok=True)
        write_3dmatch(seq.frames, path)
    return list(read_3dmatch(path))


def ping_pong(frames: list[Frame], n: int, hz: float) -> list[Frame]:
    """n frames: the sequence forth and back (no pose jumps), restamped at hz."""
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    return [dataclasses.replace(frames[order[i % len(order)]], stamp_ns=int(i * 1e9 / hz)) for i in range(n)]


def trained_mapper(cfg: MapperConfig, frames: list[Frame], s: Sizes, fused: bool) -> Mapper:
    torch.manual_seed(0)
    m = Mapper(cfg)
    set_path(fused, m)
    for f in frames[: s.train_frames]:
        m.add_frame(f)
    return m


def bench_training(m: Mapper, s: Sizes) -> dict:
    m.step(s.warmup_steps)
    sync(s.device)
    t = time.perf_counter()
    st = m.step(s.train_steps)
    sync(s.device)
    dt = time.perf_counter() - t
    assert math.isfinite(st.loss), f"training diverged (loss {st.loss})"
    return {"train_steps_per_s": s.train_steps / dt, "train_points_per_s": st.samples / dt}


def bench_query(m: Mapper, s: Sizes) -> dict:
    lo, hi = m.bounds()
    pts = np.random.default_rng(0).uniform(lo, hi, size=(s.query_points, 3)).astype(np.float32)
    chunk = 1 << 21 if s.device == "cuda" else 65536
    m.query(pts[: min(len(pts), 100_000)], want_gradient=True, chunk=chunk)  # warm-up
    sync(s.device)
    t = time.perf_counter()
    q = m.query(pts, want_gradient=True, chunk=chunk)
    dt = time.perf_counter() - t
    assert np.isfinite(q.sdf).all() and np.isfinite(q.gradient).all()
    return {"query_points_per_s": len(pts) / dt}


def bench_mesh(m: Mapper, s: Sizes) -> dict:
    from neural_mapping.products.mesh import MeshExtractor

    best, n_tri = float("inf"), 0
    for _ in range(2):  # a fresh extractor each time (no cached tiles); the first also warms up
        sync(s.device)
        t = time.perf_counter()
        _, faces, _ = MeshExtractor(m, voxel_m=s.mesh_voxel_m).extract_arrays(full=True)
        sync(s.device)
        best, n_tri = min(best, time.perf_counter() - t), len(faces)
    return {"mesh_s": best, "_mesh_triangles": n_tri}


def bench_render(m: Mapper, frames: list[Frame], s: Sizes) -> dict:
    f = frames[len(frames) // 2]
    H, W = f.depth_m.shape
    r = m.render(f.T_WC, f.K, H, W)  # warm-up
    best = float("inf")
    for _ in range(max(1, s.render_repeats)):
        sync(s.device)
        t = time.perf_counter()
        r = m.render(f.T_WC, f.K, H, W)
        best = min(best, time.perf_counter() - t)
    assert np.isfinite(r.depth).all()
    return {"render_s": best, "_render_hit_pct": float(100 * (r.depth > 0).mean()), "_render_size": f"{W}x{H}"}


def bench_online(cfg: MapperConfig, frames: list[Frame], s: Sizes, fused: bool) -> dict:
    from neural_mapping.runner import RunOptions, run_mapping

    n = max(2, int(round(s.online_s * s.online_hz)))
    feed = ping_pong(frames, n, s.online_hz)
    torch.manual_seed(0)
    m = Mapper(cfg)
    set_path(fused, m)
    res = run_mapping(feed, cfg, RunOptions(realtime=True, rate_hz=s.online_hz, progress=False,
                                            evaluate_held_out=False), total=n, mapper=m)
    mt = res.metrics
    integrated = mt.frames_read - mt.frames_dropped
    return {"online_integrated_pct": 100.0 * integrated / max(1, mt.frames_read),
            "online_steps_per_s": mt.steps / max(mt.wall_s, 1e-9),
            "_online_frames": mt.frames_read, "_online_rejected": mt.frames_rejected}


ROWS = [  # key, label, unit, higher is better
    ("train_steps_per_s", "training steps", "steps/s", True),
    ("train_points_per_s", "training sample points", "points/s", True),
    ("online_integrated_pct", "online at 30 Hz: frames integrated", "%", True),
    ("online_steps_per_s", "online at 30 Hz: training steps alongside", "steps/s", True),
    ("query_points_per_s", "query sdf + gradient", "points/s", True),
    ("mesh_s", "mesh of the observed region", "s", False),
    ("render_s", "render colour + depth", "s", False),
]


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if abs(v) >= 1e5:
        return f"{v:.3g}"
    return f"{v:.4g}"


def table(res: dict) -> str:
    lines = [f"| measurement | unit | fused | pure PyTorch | ratio (fused better > 1) | target ({res['target_card']}) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['label']} | {r['unit']} | {fmt(r['fused'])} | {fmt(r['reference'])} | {fmt(r['ratio'])} | "
                     f"{r['target']} |")
    return "\n".join(lines)


def environment(s: Sizes) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": s.device,
           "triton": None, "triton_path": hashgrid_triton.available() and s.device == "cuda",
           "triton_unavailable": hashgrid_triton.unavailable_reason()}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        pass
    if s.device == "cuda":
        env["card"] = torch.cuda.get_device_name(0)
        # which path HashGridEncoding.forward takes on CUDA tensors (the fused one must be Triton's)
        from neural_mapping.encodings import HashGridEncoding

        enc = HashGridEncoding(4, 2, 12).cuda()
        env["cuda_forward"] = type(enc(torch.zeros(8, 3, device="cuda", requires_grad=True)).grad_fn).__name__
    else:
        env["card"] = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (proves the script runs)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "outputs" / "device_check"))
    ap.add_argument("--scene", default=None, help="3dmatch folder of the scene (default: .bench/scene, generated "
                                                  "there when absent; smoke: OUT/scene)")
    ap.add_argument("--tests", default="not run", help="outcome of the CUDA tests, recorded in the results")
    ap.add_argument("--only", default=None, help="comma-separated subset of train,online,query,mesh,render")
    a = ap.parse_args(argv)
    s = SMOKE if a.cpu_smoke else GPU
    if s.device == "cuda" and not torch.cuda.is_available():
        print("[bench] no CUDA device: run with --cpu-smoke on the CPU", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = Path(a.scene) if a.scene else (out / "scene" if a.cpu_smoke else REPO / ".bench" / "scene")
    t_all = time.perf_counter()
    frames = load_scene(scene, s)
    print(f"[bench] {len(frames)} frames {frames[0].width}x{frames[0].height} from {scene}", flush=True)
    cfg = make_cfg(s)
    only = set(a.only.split(",")) if a.only else {"train", "online", "query", "mesh", "render"}
    vals: dict[str, dict] = {"fused": {}, "reference": {}}
    timings = {}
    for name, fused in (("fused", True), ("reference", False)):
        t0 = time.perf_counter()
        v = vals[name]
        if only & {"train", "query", "mesh", "render"}:
            m = trained_mapper(cfg, frames, s, fused)
            if "train" in only:
                v.update(bench_training(m, s))
            else:
                m.step(s.warmup_steps + s.train_steps)
            if "query" in only:
                v.update(bench_query(m, s))
            if "mesh" in only:
                v.update(bench_mesh(m, s))
            if "render" in only:
                v.update(bench_render(m, frames, s))
            del m
        if "online" in only:
            v.update(bench_online(cfg, frames, s, fused))
        set_path(True)
        timings[name] = time.perf_counter() - t0
        print(f"[bench] {name}: {timings[name]:.1f} s {json.dumps({k: round(x, 4) if isinstance(x, float) else x for k, x in v.items()})}",
              flush=True)
        if s.device == "cuda":
            torch.cuda.empty_cache()
    rows = []
    for key, label, unit, higher in ROWS:
        f, r = vals["fused"].get(key), vals["reference"].get(key)
        if f is None and r is None:
            continue
        ratio = None
        if f is not None and r is not None and f > 0 and r > 0:
            ratio = f / r if higher else r / f
        lab = label + (f" at {s.mesh_voxel_m * 100:g} cm" if key == "mesh_s" else "")
        lab += f" {vals['fused'].get('_render_size', '')}" if key == "render_s" else ""
        rows.append({"key": key, "label": lab, "unit": unit, "fused": f, "reference": r, "ratio": ratio,
                     "target": TARGETS[key] if not a.cpu_smoke else "(smoke: none)"})
    res = {"issue": 15, "smoke": a.cpu_smoke, "environment": environment(s), "tests": a.tests,
           "target_card": "H100/H200", "sizes": dataclasses.asdict(s),
           "scene": {"path": str(scene), "frames": len(frames), "size": [frames[0].width, frames[0].height]},
           "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k in ("device", "train", "encoding", "render")},
           "rows": rows, "extra": vals, "seconds": {**timings, "total": time.perf_counter() - t_all}}
    (out / "device_check.json").write_text(json.dumps(res, indent=2, default=str))
    md = (f"GPU check (issue 15): {res['environment']['card']}, torch {torch.__version__}, triton "
          f"{res['environment']['triton']}; tests: {a.tests}\n\n" + table(res) + "\n")
    (out / "device_check.md").write_text(md)
    print(md)
    print(f"[bench] wrote {out / 'device_check.json'} ({res['seconds']['total']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
