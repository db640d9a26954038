"""`neural-mapping map INPUT --out DIR`: train a neural map offline from a dataset folder or bag.

Writes DIR/map.pt (with --submaps: the map directory DIR/map, docs/submaps.md), DIR/mesh.ply,
DIR/config.yaml (resolved) and DIR/metrics.json.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import add_source_arguments, source_kwargs
from neural_mapping.io.outputs import require_writable_dir


def add_arguments(p) -> None:
    p.add_argument("input", help="dataset folder (3DMatch, Replica, TUM) or bag")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--preset", choices=("cpu", "gpu"), default=None,
                   help="configuration preset (default: gpu when CUDA is available, else cpu)")
    p.add_argument("--config", default=None, metavar="YAML", help="configuration file applied on top of the preset")
    p.add_argument("--field", choices=("sdf", "nerf"), default=None, help="field kind (overrides the config)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device (overrides)")
    p.add_argument("--submaps", action="store_true",
                   help="split the map into submaps (submaps.enabled; docs/submaps.md): bounded memory on large "
                        "sites; the map is written as the directory DIR/map")
    p.add_argument("--realtime", action="store_true",
                   help="feed frames at their recorded pace (or --rate) and train in between, like the live node")
    p.add_argument("--rate", type=float, default=None, metavar="HZ", help="with --realtime: frames per second")
    p.add_argument("--exclude-every", type=int, default=0, metavar="N",
                   help="hold out frames 0, N, 2N, ... (not trained on) and report their depth L1 and PSNR")
    p.add_argument("--extra-seconds", type=float, default=0.0, metavar="S", help="keep training S seconds after the last frame")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="read at most N input frames")
    p.add_argument("--no-mesh", action="store_true", help="do not write mesh.ply")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no configuration listing")
    add_source_arguments(p)


def resolve_config(args):
    """Preset, then --config YAML, then --field / --device."""
    import torch

    from neural_mapping.config import apply_overrides, load_yaml, preset

    name = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    cfg = preset(name)
    if args.config:
        cfg = load_yaml(args.config, base=cfg)
    over = {}
    if args.field:
        over["field.kind"] = args.field
    if args.device:
        over["device"] = args.device
    if getattr(args, "submaps", False):
        over["submaps.enabled"] = True
    if over:
        cfg = apply_overrides(cfg, over)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for (by --device, the preset or --config) but CUDA is not available; "
                         "use --device cpu or --preset cpu")
    return cfg


def run(args) -> int:
    from neural_mapping.io.sources import open_source
    from neural_mapping.runner import RunOptions, log_config, run_mapping, write_outputs

    if args.exclude_every < 0:
        raise InputError(f"--exclude-every must be >= 0, got {args.exclude_every}")
    if args.rate is not None and not args.rate > 0:
        raise InputError(f"--rate must be positive, got {args.rate}")
    if args.extra_seconds < 0:
        raise InputError(f"--extra-seconds must be >= 0, got {args.extra_seconds}")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    out = Path(args.out)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = resolve_config(args)
    src = open_source(args.input, **source_kwargs(args))
    require_writable_dir(out, "output directory (--out)", create=True)  # before training, not after
    if not args.quiet:
        log_config(cfg)
    try:
        total = len(src)
    except TypeError:
        total = None
    opts = RunOptions(realtime=args.realtime, rate_hz=args.rate, exclude_every=args.exclude_every,
                      extra_seconds=args.extra_seconds, max_frames=args.max_frames,
                      progress=not args.quiet and sys.stderr.isatty())
    res = run_mapping(src, cfg, opts, total=total)
    res.metrics.source_skipped = int(getattr(src, "skipped", 0))
    if res.metrics.frames_added == 0:
        raise InputError(f"{args.input}: no usable frame ({res.metrics.frames_read} read, "
                         f"{res.metrics.frames_rejected} rejected, {res.metrics.source_skipped} unreadable)")
    try:
        paths = write_outputs(res, out, cfg, mesh=not args.no_mesh)
    except OSError as e:  # e.g. the disk filled up during training
        raise InputError(f"{e.filename or out}: cannot write the outputs ({e.strerror or e})") from None
    m = res.metrics
    print(f"map: {m.frames_added} frames ({m.frames_rejected} rejected, {m.frames_held_out} held out, "
          f"{m.source_skipped} unreadable), {m.keyframes} keyframes, {m.steps} steps in {m.wall_s:.1f} s "
          f"({m.rays_per_s:,.0f} rays/s, {m.samples_per_s:,.0f} samples/s on {m.device}), final loss {m.final_loss:.4g}")
    if m.frames_held_out:
        print(f"held out: {m.frames_held_out} frames, depth L1 {m.held_out_depth_l1_m * 100:.2f} cm, "
              f"PSNR {m.held_out_psnr_db:.2f} dB, surface hit {m.held_out_hit_ratio * 100:.1f}%")
    for k, p in paths.items():
        print(f"wrote {k}: {p}")
    return 0
