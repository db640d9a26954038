"""`neural-mapping convert INPUT OUTPUT_BAG_DIR`: any dataset layout (or bag) to a rosbag2 bag."""

from __future__ import annotations

import shutil
from pathlib import Path

from neural_mapping.errors import InputError
from neural_mapping.io.outputs import require_writable_dir
from neural_mapping.io.cli_args import add_source_arguments, source_kwargs


def add_arguments(p) -> None:
    p.add_argument("input", help="dataset folder (3DMatch, Replica, TUM) or bag")
    p.add_argument("output", help="bag directory to create")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)")
    p.add_argument("--overwrite", action="store_true", help="replace the output directory if it exists")
    add_source_arguments(p)


def run(args) -> int:
    from neural_mapping.io.bag import write_bag
    from neural_mapping.io.sources import open_source

    src = open_source(args.input, **source_kwargs(args))
    out = Path(args.output)
    if out.resolve() == Path(args.input).resolve():
        raise InputError(f"{out}: the output must differ from the input")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: already exists (use --overwrite to replace it)")
    require_writable_dir(out.resolve().parent, "directory of the output")
    counter = {"n": 0}

    def frames():
        for f in src:
            counter["n"] += 1
            yield f

    try:
        write_bag(frames(), out, storage=args.storage, overwrite=args.overwrite)
    except OSError as e:  # a full disk: no half-written bag left behind
        shutil.rmtree(out, ignore_errors=True)
        raise InputError(f"{out}: cannot write the bag ({e.strerror or e}); nothing was kept") from None
    if counter["n"] == 0:
        shutil.rmtree(out, ignore_errors=True)
        raise InputError(f"{args.input}: no readable frames ({src.skipped} skipped)")
    gt = Path(args.input) / "gt_mesh.ply"
    if Path(args.input).is_dir() and gt.is_file():
        shutil.copy2(gt, out / "gt_mesh.ply")
    print(f"converted {counter['n']} frames from {args.input} ({src.fmt}) to {out} ({args.storage}); "
          f"skipped {src.skipped}")
    return 0
