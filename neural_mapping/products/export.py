"""Files of the products: meshes (PLY / OBJ) and occupancy maps (PGM + YAML, as Nav2's
map_server loads them), written atomically where the format allows."""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

from neural_mapping.products.occupancy import FREE_CELL, OCCUPIED_CELL, UNKNOWN_CELL, OccupancySlice


def save_mesh(mesh, path) -> None:
    """Write a mesh as PLY or OBJ (by extension) through Open3D; raises ValueError if it cannot."""
    import open3d as o3d

    p = str(path)
    if not p.lower().endswith((".ply", ".obj")):
        raise ValueError(f"{p}: mesh output must end in .ply or .obj")
    if len(mesh.triangles) == 0:  # Open3D refuses to write an empty mesh; an empty map is not an error
        with open(p, "w") as f:
            if p.lower().endswith(".ply"):
                f.write("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                        "property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n")
            else:
                f.write("# empty mesh (no surface in the observed region)\n")
        return
    if not o3d.io.write_triangle_mesh(p, mesh, write_vertex_colors=True):
        raise ValueError(f"{p}: Open3D could not write the mesh")


def write_occupancy_map(sl: OccupancySlice, name: str, occupied_thresh: float = 0.65,
                        free_thresh: float = 0.196) -> tuple[str, str]:
    """Write ``NAME.pgm`` + ``NAME.yaml`` in the format Nav2's map_server loads (mode trinary).

    PGM pixels: 0 (black) occupied, 254 free, 205 unknown; image row 0 is the top of the
    map (max y), so the OccupancySlice rows are flipped. map_server reads a pixel as
    occ = (255 - p) / 255: 0 -> 1.0 (> occupied_thresh), 254 -> 0.004 (< free_thresh) and
    205 -> 0.19608, which is unknown only with free_thresh <= 0.196 (ROS map_saver's value).
    Returns the two paths.
    """
    pgm, yml = f"{name}.pgm", f"{name}.yaml"
    img = np.full(sl.data.shape, 205, np.uint8)
    img[sl.data == FREE_CELL] = 254
    img[sl.data == OCCUPIED_CELL] = 0
    img = img[::-1]
    H, W = img.shape
    header = f"P5\n# neural_mapping occupancy z in [{sl.z_min:g}, {sl.z_max:g}]\n{W} {H}\n255\n".encode()
    _atomic_write(pgm, header + img.tobytes())
    yaml_text = (
        f"image: {os.path.basename(pgm)}\n"
        f"mode: trinary\n"
        f"resolution: {sl.resolution:.6g}\n"
        f"origin: [{float(sl.origin_xy[0]):.6g}, {float(sl.origin_xy[1]):.6g}, 0.0]\n"
        f"negate: 0\n"
        f"occupied_thresh: {occupied_thresh}\n"
        f"free_thresh: {free_thresh}\n"
    )
    _atomic_write(yml, yaml_text.encode())
    return pgm, yml


def read_occupancy_map(yaml_path: str) -> OccupancySlice:
    """Read a map_server PGM/YAML pair back (trinary interpretation, as map_server does)."""
    import yaml

    with open(yaml_path) as f:
        meta = yaml.safe_load(f)
    img_path = os.path.join(os.path.dirname(os.path.abspath(yaml_path)), meta["image"])
    with open(img_path, "rb") as f:
        raw = f.read()
    # parse a binary PGM header: magic, (comments), width, height, maxval
    tokens, pos = [], 0
    while len(tokens) < 4:
        while raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":
            pos = raw.index(b"\n", pos) + 1
            continue
        end = pos
        while not raw[end:end + 1].isspace():
            end += 1
        tokens.append(raw[pos:end].decode())
        pos = end
    if tokens[0] != "P5":
        raise ValueError(f"{img_path}: not a binary PGM (P5)")
    W, H = int(tokens[1]), int(tokens[2])
    img = np.frombuffer(raw[pos + 1:pos + 1 + W * H], np.uint8).reshape(H, W)
    negate = int(meta.get("negate", 0))
    p = (img.astype(np.float64) / 255.0) if negate else (255.0 - img.astype(np.float64)) / 255.0
    data = np.full((H, W), UNKNOWN_CELL, np.int8)
    data[p > float(meta["occupied_thresh"])] = OCCUPIED_CELL
    data[p < float(meta["free_thresh"])] = FREE_CELL
    origin = np.array(meta["origin"][:2], dtype=np.float64)
    return OccupancySlice(data[::-1].copy(), origin, float(meta["resolution"]))


def _atomic_write(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
