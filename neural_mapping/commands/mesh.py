"""`neural-mapping mesh MAP --voxel 0.02 --out mesh.ply`: marching cubes over the observed region."""

from __future__ import annotations

import time

from neural_mapping.errors import InputError
from neural_mapping.io.cli_args import MAP_HELP, add_memory_argument, check_memory, load_map_arg
from neural_mapping.io.outputs import require_writable_dir, write_mesh_verified


def add_arguments(p) -> None:
    p.add_argument("map", help=MAP_HELP)
    p.add_argument("--voxel", type=float, default=None, metavar="M",
                   help="marching-cubes voxel size in metres (default: the map's mesh.voxel_m)")
    p.add_argument("--out", required=True, help="output mesh, .ply or .obj")
    p.add_argument("--min-component", type=int, default=None, metavar="N",
                   help="drop fragments with fewer triangles (default: the map's mesh.min_component_triangles)")
    p.add_argument("--no-color", action="store_true", help="do not colour vertices from the field")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="compute device")
    add_memory_argument(p)


def run(args) -> int:
    from pathlib import Path

    from neural_mapping.products import MeshExtractor

    if not str(args.out).lower().endswith((".ply", ".obj")):
        raise InputError(f"{args.out}: --out must end in .ply or .obj")
    if args.voxel is not None and not args.voxel > 0:
        raise InputError(f"--voxel must be positive, got {args.voxel}")
    require_writable_dir(Path(args.out).resolve().parent, "directory of --out")
    mapper = load_map_arg(args.map, args.device)
    check_memory(mapper, "mesh", args.voxel or mapper.cfg.mesh.voxel_m, args)
    t0 = time.perf_counter()
    ex = MeshExtractor(mapper, voxel_m=args.voxel, min_component_triangles=args.min_component,
                       color=False if args.no_color else None)
    mesh = ex.extract(full=True)
    dt = time.perf_counter() - t0
    write_mesh_verified(mesh, args.out)
    s = ex.stats
    print(f"mesh: {s.vertices} vertices, {s.triangles} triangles at {ex.voxel_m:g} m "
          f"({s.points_queried} field queries, {s.components_removed} small fragments removed) in {dt:.2f} s")
    print(f"wrote {args.out}")
    return 0
