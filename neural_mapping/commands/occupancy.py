"""`neural-mapping occupancy MAP --z-min A --z-max B --resolution R --out NAME`: NAME.pgm + NAME.yaml."""

from __future__ import annotations

from pathlib import Path

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import MAP_HELP, add_memory_argument, check_memory, load_map_arg
from neural_mapping.io.outputs import require_writable_dir


def add_arguments(p) -> None:
    p.add_argument("map", help=MAP_HELP)
    p.add_argument("--z-min", type=float, default=None, help="bottom of the height band (m, default occupancy.z_min)")
    p.add_argument("--z-max", type=float, default=None, help="top of the height band (m, default occupancy.z_max)")
    p.add_argument("--resolution", type=float, default=None,
                   help="cell size (m, default occupancy.resolution_m)")
    p.add_argument("--out", required=True, help="output name: writes NAME.pgm and NAME.yaml (Nav2 map_server)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device")
    add_memory_argument(p)


def run(args) -> int:
    from neural_mapping.products import occupancy_slice_2d, write_occupancy_map

    out = str(args.out)
    for ext in (".pgm", ".yaml", ".yml"):
        if out.endswith(ext):
            out = out[: -len(ext)]
    require_writable_dir(Path(out).resolve().parent, "directory of --out")
    mapper = load_map_arg(args.map, args.device)
    oc = mapper.cfg.occupancy
    z_min = oc.z_min if args.z_min is None else args.z_min
    z_max = oc.z_max if args.z_max is None else args.z_max
    res = oc.resolution_m if args.resolution is None else args.resolution
    if not z_max > z_min:
        raise InputError(f"--z-max ({z_max}) must exceed --z-min ({z_min})")
    if not res > 0:
        raise InputError(f"--resolution must be positive, got {res}")
    check_memory(mapper, "occupancy_2d", res, args, z_min=z_min, z_max=z_max)
    sl = occupancy_slice_2d(mapper, z_min, z_max, res)
    if sl.data.size == 0:
        raise InputError(f"{args.map}: the map is empty (no observed region)")
    try:
        pgm, yml = write_occupancy_map(sl, out)  # each file written whole (temporary file + rename) or not at all
    except OSError as e:
        raise InputError(f"{out}: cannot write the occupancy map ({e.strerror or e})") from None
    n = sl.data.size
    occ, free = int((sl.data == 100).sum()), int((sl.data == 0).sum())
    print(f"occupancy {sl.width}x{sl.height} cells at {res:g} m, z in [{z_min:g}, {z_max:g}] m, origin "
          f"({sl.origin_xy[0]:.3f}, {sl.origin_xy[1]:.3f}): {100 * occ / n:.1f}% occupied, {100 * free / n:.1f}% free, "
          f"{100 * (n - occ - free) / n:.1f}% unknown")
    print(f"wrote {pgm} and {yml}")
    return 0


