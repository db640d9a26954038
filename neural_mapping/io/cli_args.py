"""Command-line flags shared by commands: choosing an input (every command that reads frames) and
the memory budget of a product (mesh, occupancy)."""

from __future__ import annotations

import argparse

from neural_mapping.errors import InputError
from neural_mapping.io.sources import FORMATS


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--format, bag topic flags and --slop (use with :func:`source_kwargs`)."""
    g = parser.add_argument_group("input")
    g.add_argument("--format", dest="input_format", choices=FORMATS, default=None,
                   help="input format (default: auto-detect)")
    g.add_argument("--color-topic", default=None, help="bag: sensor_msgs/Image colour topic (default: by type)")
    g.add_argument("--depth-topic", default=None, help="bag: sensor_msgs/Image depth topic, 16UC1 mm or 32FC1 m")
    g.add_argument("--info-topic", default=None, help="bag: sensor_msgs/CameraInfo topic")
    g.add_argument("--pose-topic", default=None,
                   help="bag: camera pose in the map (PoseStamped, Odometry or TransformStamped), OpenCV optical axes")
    g.add_argument("--map-frame", default=None,
                   help="bag with /tf poses: the map frame (default 'map')")
    g.add_argument("--camera-frame", default=None,
                   help="bag with /tf poses: the camera's optical frame (default: the depth image's frame_id)")
    g.add_argument("--slop", type=float, default=None, metavar="S",
                   help="bag: max stamp difference of colour and depth (s, default 0.02)")


def source_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for open_source() from the flags of add_source_arguments()."""
    kw = {}
    fmt = getattr(args, "input_format", None)
    if fmt in (None, "bag"):
        kw = {"color_topic": args.color_topic, "depth_topic": args.depth_topic, "info_topic": args.info_topic,
              "pose_topic": args.pose_topic, "slop_s": args.slop,
              "map_frame": args.map_frame, "camera_frame": args.camera_frame}
    return {"fmt": fmt, **kw}


#: help of the MAP argument of the commands that read a map
MAP_HELP = "map file written by `neural-mapping map` (map.pt), or a submapped map's directory (map/)"


def load_map_arg(path: str, device: str | None):
    """The map a command was given: a map file (Mapper) or a submap directory (SubmapMap, docs/submaps.md)."""
    from neural_mapping.submaps.mapdir import load_any

    return load_any(path, device=None if device in (None, "auto") else device)


def add_memory_argument(p) -> None:
    """The ``--max-memory-gb`` option of the commands that compute a product."""
    p.add_argument("--max-memory-gb", type=float, default=None, metavar="GB",
                   help="refuse (exit 2) when the product's estimated peak memory exceeds this (default 2)")


def check_memory(view, product: str, resolution: float, args, **band) -> None:
    """products.budget.check_product_memory with the command's ``--max-memory-gb``, as an InputError."""
    from neural_mapping.products.budget import ProductTooLarge, check_product_memory

    gb = getattr(args, "max_memory_gb", None)
    if gb is not None and not gb > 0:
        raise InputError(f"--max-memory-gb must be positive, got {gb}")
    try:
        check_product_memory(view, product, resolution, None if gb is None else gb * 1024 ** 3, **band)
    except ProductTooLarge as e:
        raise InputError(f"{e} (--max-memory-gb)") from None
