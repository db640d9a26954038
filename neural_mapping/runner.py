"""Offline runner: feed frames from any source to a :class:`~neural_mapping.mapper.Mapper`.

``run_mapping`` is what ``neural-mapping map`` and the benchmarks call. With
``realtime`` frames are put at their recorded pace (stamps, or a fixed rate) into the
:class:`~neural_mapping.online.OnlineMapper` the live ROS node trains with (bounded drop-oldest
queue; its trainer alternates "integrate up to ``frames_per_step`` queued frames, one step": by
default every queued frame);
otherwise each frame is followed by ``cfg.train.steps_per_frame`` steps. Frames whose input index is a multiple of
``exclude_every`` are held out (never trained on) and rendered at the end for depth L1
and PSNR.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from neural_mapping.camera import stride_intrinsics
from neural_mapping.config import MapperConfig, save_yaml, to_flat
from neural_mapping.frame import Frame
from neural_mapping.mapper import Mapper
from neural_mapping.online import OnlineMapper, WarnThrottle

log = logging.getLogger(__name__)

#: held-out frames are rendered at a stride that keeps them at or below this many pixels
EVAL_MAX_PIXELS = 20_000


@dataclass
class RunOptions:
    realtime: bool = False
    rate_hz: float | None = None  # realtime: feed at this rate instead of the frames' stamps
    exclude_every: int = 0  # hold out frames whose index is a multiple of this (0 = none)
    extra_seconds: float = 0.0  # keep training this long after the last frame
    max_frames: int | None = None  # stop reading after this many input frames
    queue_size: int = 16  # realtime: frames waiting for the trainer (oldest dropped): OnlineMapper, as the node
    # realtime: frames integrated between two training steps (OnlineMapper); integrating a frame is cheap
    # (a non-keyframe gives a few rays to the reservoir: keyframes.py), so every queued frame is taken
    frames_per_step: int = 16
    progress: bool = True  # tqdm bar
    evaluate_held_out: bool = True  # render the held-out frames at the end (bench does its own)


@dataclass
class HeldOutResult:
    index: int  # index of the frame in the input
    depth_l1_m: float  # over pixels where both the rendering and the frame have depth
    psnr_db: float  # over pixels where the frame has depth
    hit_ratio: float  # fraction of valid-depth pixels where the map rendered a surface
    stride: int  # the frame was evaluated at every stride-th pixel


@dataclass
class RunMetrics:
    frames_read: int = 0
    frames_added: int = 0
    frames_rejected: int = 0
    frames_held_out: int = 0
    frames_dropped: int = 0  # realtime: dropped from the full queue because training was slower than input
    source_skipped: int = 0
    keyframes: int = 0
    steps: int = 0
    rays_per_s: float = 0.0
    samples_per_s: float = 0.0
    wall_s: float = 0.0  # from the first frame to the end of training
    train_s: float = 0.0  # time inside Mapper.step
    steps_during_frames: int = 0
    steps_extra: int = 0
    final_loss: float = float("nan")
    final_terms: dict = field(default_factory=dict)
    device: str = ""
    field_kind: str = ""
    held_out: list = field(default_factory=list)  # HeldOutResult as dicts
    held_out_depth_l1_m: float = float("nan")  # mean over held-out frames
    held_out_psnr_db: float = float("nan")
    held_out_hit_ratio: float = float("nan")
    mesh: dict = field(default_factory=dict)


@dataclass
class RunResult:
    mapper: Mapper
    metrics: RunMetrics
    held_out_frames: list  # (index, Frame)


def eval_stride(frame: Frame) -> int:
    return max(1, math.ceil(math.sqrt(frame.width * frame.height / EVAL_MAX_PIXELS)))


def evaluate_frame(mapper: Mapper, index: int, frame: Frame) -> HeldOutResult:
    """Render the map at a frame's pose (every s-th pixel) and compare depth and colour."""
    from neural_mapping.evaluation import depth_l1, psnr

    s = eval_stride(frame)
    K = stride_intrinsics(frame.K, s)  # pixel (s*i, s*j) of the frame is pixel (i, j) of the strided image
    gt_d = frame.depth_m[::s, ::s]
    gt_c = frame.rgb[::s, ::s].astype(np.float32) / 255.0
    H, W = gt_d.shape
    r = mapper.render(frame.T_WC, K, H, W)
    valid = gt_d > 0
    hit = r.depth > 0
    p = psnr(r.color[valid], gt_c[valid]) if valid.any() else float("nan")
    return HeldOutResult(index, depth_l1(r.depth, gt_d), p, float(hit[valid].mean()) if valid.any() else float("nan"), s)


def new_map(cfg: MapperConfig):
    """A new map for ``cfg``: a :class:`~neural_mapping.submaps.SubmapMap` when ``submaps.enabled``, else a Mapper."""
    if cfg.submaps.enabled:
        from neural_mapping.submaps import SubmapMap

        return SubmapMap(cfg)
    return Mapper(cfg)


def run_mapping(frames: Iterable[Frame], cfg: MapperConfig, opts: RunOptions, total: int | None = None,
                mapper: Mapper | None = None) -> RunResult:
    """Train a mapper on ``frames`` (any iterable of Frame in time order); see the module doc."""
    from tqdm import tqdm

    mapper = mapper or new_map(cfg)
    m = RunMetrics(device=str(mapper.device), field_kind=cfg.field.kind)
    held: list[tuple[int, Frame]] = []
    if opts.max_frames is not None and total is not None:
        total = min(total, opts.max_frames)
    bar = tqdm(total=total, disable=not opts.progress, unit="frame", dynamic_ncols=True, leave=False)
    steps0 = mapper.stats.steps
    core = None
    if opts.realtime:  # the live node's training loop: frames queued, the trainer steps in between
        core = OnlineMapper(mapper, queue_size=opts.queue_size, frames_per_step=opts.frames_per_step,
                            on_warning=WarnThrottle(log.warning))
        core.start()
    t0 = stamp0 = None
    try:
        for i, f in enumerate(frames):
            if opts.max_frames is not None and i >= opts.max_frames:
                break
            m.frames_read += 1
            if t0 is None:
                t0, stamp0 = time.perf_counter(), f.stamp_ns
            held_out = bool(opts.exclude_every) and i % opts.exclude_every == 0
            if held_out:
                held.append((i, f))
            elif core is not None:
                due = t0 + (i / opts.rate_hz if opts.rate_hz else max(0.0, (f.stamp_ns - stamp0) * 1e-9))
                time.sleep(max(0.0, due - time.perf_counter()))  # until this frame "arrives"
                core.put(f)
            else:
                mapper.add_frame(f)
                if cfg.train.steps_per_frame:
                    mapper.step(cfg.train.steps_per_frame)
                    m.steps_during_frames += cfg.train.steps_per_frame
            bar.update(1)
            bar.set_postfix(steps=mapper.stats.steps, loss=f"{mapper.stats.last_loss:.4g}", kf=len(mapper.keyframes))
        if core is not None:
            while not core.wait_until_drained(1.0):  # the last frames still waiting, each trained on once
                if not core.running:
                    break
    finally:
        if core is not None:
            core.stop(timeout=60.0)
    bar.close()
    if core is not None:
        m.frames_dropped = core.stats().dropped_queue_full
        m.steps_during_frames = mapper.stats.steps - steps0
    if t0 is None:
        t0 = time.perf_counter()
    if opts.extra_seconds > 0:
        m.steps_extra = mapper.train_for(opts.extra_seconds)
    m.wall_s = time.perf_counter() - t0
    st = mapper.stats
    m.frames_added, m.frames_rejected, m.frames_held_out = st.frames_added, st.frames_rejected, len(held)
    m.keyframes, m.steps, m.train_s = len(mapper.keyframes), st.steps, st.train_seconds
    m.final_loss = st.last_loss
    if st.train_seconds > 0:
        m.rays_per_s = st.rays_trained / st.train_seconds
        m.samples_per_s = st.samples_trained / st.train_seconds
    m.final_terms = mapper.last_terms.as_dict()
    results = [evaluate_frame(mapper, i, f) for i, f in held] if opts.evaluate_held_out else []
    m.held_out = [asdict(r) for r in results]
    if results:
        m.held_out_depth_l1_m = _nanmean([r.depth_l1_m for r in results])  # nan if no frame had a hit
        m.held_out_psnr_db = _nanmean([r.psnr_db for r in results])
        m.held_out_hit_ratio = _nanmean([r.hit_ratio for r in results])
    return RunResult(mapper, m, held)


def _nanmean(xs) -> float:
    a = np.asarray(xs, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else float("nan")


def log_config(cfg: MapperConfig, print_fn=print) -> None:
    """Print the resolved configuration, one ``name = value`` per line."""
    print_fn("resolved configuration:")
    for k, v in to_flat(cfg).items():
        print_fn(f"  {k} = {v}")


def write_outputs(result: RunResult, out_dir: str | Path, cfg: MapperConfig, mesh: bool = True) -> dict[str, Path]:
    """DIR/map.pt (a submapped map: the directory DIR/map), DIR/mesh.ply, DIR/config.yaml,
    DIR/metrics.json; returns their paths."""
    from neural_mapping.mapfile import save_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"map": out / "map.pt", "config": out / "config.yaml", "metrics": out / "metrics.json"}
    save_yaml(cfg, paths["config"])
    if isinstance(result.mapper, Mapper):
        save_map(result.mapper, paths["map"])
    else:  # submaps (docs/submaps.md)
        from neural_mapping.submaps import save_map_dir

        paths["map"] = save_map_dir(result.mapper, out / "map")
    if mesh:
        from neural_mapping.io.outputs import write_mesh_verified
        from neural_mapping.products import MeshExtractor

        t = time.perf_counter()
        ex = MeshExtractor(result.mapper)
        msh = ex.extract(full=True)
        paths["mesh"] = out / "mesh.ply"
        write_mesh_verified(msh, paths["mesh"])  # as `mesh --out`: read back, not left half-written
        s = ex.stats
        result.metrics.mesh = {"vertices": int(s.vertices), "triangles": int(s.triangles),
                               "voxel_m": float(ex.voxel_m), "seconds": time.perf_counter() - t}
    paths["metrics"].write_text(json.dumps(asdict(result.metrics), indent=2, default=_json_default) + "\n")
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
