"""`neural-mapping view MAP|INPUT [--port 8080] [--host 127.0.0.1] [--allow-control]`: a live web viewer.

On a map file, inspect it; on an input (dataset folder or bag), map it live at its pace with the
same online core as `map --realtime` and show it growing. Open the printed address in a browser.
"""

from __future__ import annotations

import logging
import time

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import add_source_arguments, source_kwargs


def add_arguments(p) -> None:
    p.add_argument("input", help="map file (map.pt) to inspect, or a dataset folder or bag to map live")
    p.add_argument("--port", type=int, default=8080, help="HTTP/websocket port (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1: this machine only; 0.0.0.0 exposes it, with a warning)")
    p.add_argument("--allow-control", action="store_true", help="show buttons to pause/resume, save and reset the map")
    p.add_argument("--preset", choices=("cpu", "gpu"), default=None, help="live mapping: configuration preset")
    p.add_argument("--config", default=None, metavar="YAML", help="live mapping: configuration file on top of the preset")
    p.add_argument("--field", choices=("sdf", "nerf"), default=None, help="live mapping: field kind")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device")
    p.add_argument("--rate", type=float, default=None, metavar="HZ", help="live mapping: frames per second (default: stamps)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="live mapping: read at most N input frames")
    p.add_argument("--seconds", type=float, default=None, metavar="S", help="quit after S seconds (default: until Ctrl-C)")
    add_source_arguments(p)


def run(args) -> int:
    from neural_mapping.commands.map import resolve_config
    from neural_mapping.viewer.config import ViewerConfig
    from neural_mapping.viewer.live import check_input, core_for_map, is_map_file, start_live
    from neural_mapping.viewer.server import Viewer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection otherwise
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    check_input(args.input)
    vcfg = ViewerConfig(enabled=True, port=args.port, host=args.host, allow_control=args.allow_control)
    if is_map_file(args.input):
        core = core_for_map(args.input, None if args.device in (None, "auto") else args.device)
        viewer = Viewer(core, vcfg).start()
        what = f"map {args.input}"
    else:
        from neural_mapping.io.sources import open_source

        cfg = resolve_config(args)
        src = open_source(args.input, **source_kwargs(args))
        core, viewer, _ = start_live(src, cfg, lambda c: Viewer(c, vcfg).start(), args.rate, args.max_frames)
        what = f"{args.input}, mapped live"
    print(f"viewer of {what}: http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{viewer.port}",
          flush=True)
    try:
        t_end = None if args.seconds is None else time.monotonic() + args.seconds
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.2)
    finally:
        viewer.stop()
        core.stop(timeout=10.0)
    return 0
