"""open_source(): one entry point for every way frames come in.

    src = open_source("data/sun3d_frag1")          # format auto-detected
    src = open_source("run.mcap", color_topic="/cam/color")  # bag topics by name
    for frame in src: ...
    print(src.fmt, len(src), src.skipped)
"""

from __future__ import annotations

from pathlib import Path

from neural_mapping.errors import InputError
from neural_mapping.io.base import FrameSource

FORMATS = ("3dmatch", "replica", "tum", "bag")


def is_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".mcap", ".db3", ".bag")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return True
        return any(path.glob("*.mcap")) or any(path.glob("*.db3"))
    return False


def detect(path: str | Path) -> str:
    """The format of an input path; InputError naming the path when it is none of FORMATS."""
    from neural_mapping.io.datasets import detect_format

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if is_bag(p):
        return "bag"
    if p.is_file():
        raise InputError(f"{p}: not a dataset folder or bag (expected a directory, .mcap, .db3 or .bag)")
    fmt = detect_format(p)
    if fmt is None:
        if not any(p.iterdir()):
            raise InputError(f"{p}: empty directory")
        raise InputError(f"{p}: not a recognised dataset (3DMatch frame-XXXXXX.color.png|jpg, Replica results/ + "
                         "traj.txt, TUM rgb.txt + depth.txt + groundtruth.txt) or rosbag2 bag")
    return fmt


def open_source(path: str | Path, fmt: str | None = None, **bag_topics) -> FrameSource:
    """A FrameSource for a dataset folder or a bag.

    fmt: '3dmatch' | 'replica' | 'tum' | 'bag' | None (auto-detect).
    bag_topics (bags only): color_topic, depth_topic, info_topic, pose_topic, slop_s,
    max_pose_gap_s, depth_mm_scale, map_frame and camera_frame (poses from /tf). Datasets accept ``fps`` (3dmatch, replica: stamps
    from frame numbers) and for TUM ``max_diff_s`` / ``max_pose_gap_s``.
    Raises InputError for a missing or malformed input.
    """
    from neural_mapping.io import datasets

    p = Path(path)
    if fmt is None or fmt == "auto":
        fmt = detect(p)
    elif fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    elif not p.exists():
        raise InputError(f"{p}: no such file or directory")
    kw = {k: v for k, v in bag_topics.items() if v is not None}
    if fmt == "bag":
        from neural_mapping.io.bag import BagSource

        return BagSource(p, **kw)
    allowed = {"3dmatch": {"fps"}, "replica": {"fps"}, "tum": {"max_diff_s", "max_pose_gap_s"}}[fmt]
    bad = set(kw) - allowed
    bag_only = {"color_topic", "depth_topic", "info_topic", "pose_topic", "slop_s", "depth_mm_scale", "map_frame",
                "camera_frame", "max_pose_gap_s"}
    if bad - bag_only:
        raise TypeError(f"open_source: unexpected options for {fmt}: {sorted(bad - bag_only)}")
    return datasets.READERS[fmt](p, **{k: v for k, v in kw.items() if k in allowed})
