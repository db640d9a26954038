"""`neural-mapping ablate`: the lecture's claims on one input, every representation at the same budget.

The experiment is :mod:`neural_mapping.ablation`; the report (json, md, PNGs)
:mod:`neural_mapping.ablation_report`. The mirror variants train on the synthetic mirror room
(rendered here at the input's frame count, at most 160 x 120).
"""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path

from neural_mapping.errors import InputError


def add_arguments(p) -> None:
    p.add_argument("input", help="dataset folder or bag")
    p.add_argument("--out", required=True, help="output directory (ablation.json, ablation.md, PNGs)")
    p.add_argument("--seconds", type=float, default=20.0, help="training seconds per variant (default 20)")
    p.add_argument("--exclude-every", type=int, default=5, metavar="N",
                   help="hold out frames whose index is a multiple of N (default 5)")
    p.add_argument("--gt-mesh", default=None, metavar="M", help="ground-truth mesh (F-score, Chamfer, normal error)")
    p.add_argument("--variants", default=None,
                   help="comma-separated subset (default all): sdf/relu, sdf/fourier, sdf/gaussian, sdf/hashgrid, "
                        "sdf/spline, sdf/siren, nerf/relu, nerf/fourier, nerf/gaussian, nerf/hashgrid, nerf/siren, "
                        "nerf/hashgrid-nodepth, mirror/plain, mirror/reflective")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames")
    p.add_argument("--seed", type=int, default=0, help="random seed of every variant (default 0)")


def _mirror_frames(n: int, like) -> tuple[list, object]:
    from neural_mapping.io.synthetic import synthetic_sequence

    w = min(160, like.width)
    h = max(8, round(w * like.height / like.width))
    seq = synthetic_sequence(n_frames=max(n, 10), width=w, height=h, scene="mirror")
    return seq.frames, seq.mesh


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from neural_mapping import ablation as A
    from neural_mapping.ablation_report import write_report
    from neural_mapping.evaluation import gt_points
    from neural_mapping.io.mirror_scene import phantom_region
    from neural_mapping.io.sources import open_source

    if args.seconds <= 0 or args.exclude_every < 2:
        raise InputError(f"--seconds must be > 0 and --exclude-every >= 2, got {args.seconds}, {args.exclude_every}")
    try:
        variants = A.select([v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None)
    except ValueError as e:
        raise InputError(str(e)) from None
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    frames = []
    for i, f in enumerate(open_source(args.input)):
        if args.max_frames is not None and i >= args.max_frames:
            break
        frames.append(f)
    if len(frames) < args.exclude_every:
        raise InputError(f"{args.input}: {len(frames)} frames, fewer than --exclude-every {args.exclude_every}")
    gt_mesh = gt = None
    train = [f for i, f in enumerate(frames) if i % args.exclude_every]
    if args.gt_mesh:
        import open3d as o3d

        gt_mesh = o3d.io.read_triangle_mesh(args.gt_mesh)
        if len(gt_mesh.triangles) == 0:
            raise InputError(f"{args.gt_mesh}: no triangles")
        gt = gt_points(gt_mesh, 50_000, frames=train[::3])
    mirror = None
    if any(v.scene == "mirror" for v in variants):
        mf, mm = _mirror_frames(len(frames), frames[0])
        mgt = gt_points(mm, 50_000, frames=[f for i, f in enumerate(mf) if i % args.exclude_every][::3])
        mirror = (mf, mm, mgt, phantom_region())
    rows, pics = [], {}
    bar = tqdm(variants, unit="variant", dynamic_ncols=True, disable=not sys.stderr.isatty())
    for v in bar:
        bar.set_description(v.name)
        try:
            if v.scene == "mirror":
                row, pic = A.run_variant(v, mirror[0], args.seconds, args.exclude_every, args.seed, mirror[1],
                                         mirror[2], phantom_box=mirror[3])
            else:
                row, pic = A.run_variant(v, frames, args.seconds, args.exclude_every, args.seed, gt_mesh, gt)
        except (RuntimeError, ValueError) as e:  # one failed variant is a row saying so, not a lost run
            row, pic = A.Row(v.name, v.overrides.get("field.kind", "sdf"), v.scene, extra={"error": str(e)}), A.Pictures()
        rows.append(row.to_dict())
        pics[v.name] = pic
        bar.write(f"{v.name}: PSNR {row.psnr_db:.2f} dB, depth L1 {row.depth_l1_cm:.2f} cm, F@5cm {row.fscore_5cm:.3f}, "
                  f"{row.steps} steps in {row.train_s:.1f} s")
        meta = {"input": str(args.input), "frames": len(frames), "exclude_every": args.exclude_every,
                "seconds": args.seconds, "seed": args.seed, "gt_mesh": args.gt_mesh, "device": "cpu",
                "torch_threads": torch.get_num_threads(), "machine": platform.node(),
                "variants_done": f"{len(rows)} of {len(variants)}"}
        paths = write_report(Path(args.out), rows, pics, meta)  # after each variant: a stopped run keeps its rows
    print((Path(args.out) / "ablation.md").read_text())
    for k, p in paths.items():
        print(f"wrote {k}: {p}")
    return 0
