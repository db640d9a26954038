"""Dataset folders: readers (3DMatch/7-Scenes, Replica/NICE-SLAM, TUM RGB-D) and writers.

Layouts (all poses camera-to-world in OpenCV axes, depth 16-bit PNG, 0 = invalid):

3DMatch / 7-Scenes  ``frame-XXXXXX.color.png|.jpg``, ``frame-XXXXXX.depth.png`` (mm; 65535 is
                    invalid too), ``frame-XXXXXX.pose.txt`` (4x4), ``camera-intrinsics.txt`` (3x3) in
                    the folder or its parent; frames may sit in ``seq-XX/`` subfolders. Stamps are
                    frame number / fps. Without an intrinsics file the 7-Scenes values
                    (585, 585, 320, 240) are used, with a warning.
Replica / NICE-SLAM ``results/frameNNNNNN.jpg|.png``, ``results/depthNNNNNN.png`` (raw / scale = m,
                    scale from ``cam_params.json`` 'scale', default 6553.5), ``traj.txt`` (one row-major
                    4x4 per line, line N for frame N), ``cam_params.json`` ({"camera": {w, h, fx, fy,
                    cx, cy, scale}}) in the folder or its parent.
TUM RGB-D           ``rgb.txt``, ``depth.txt`` (``timestamp path`` lines), ``groundtruth.txt``
                    (``t tx ty tz qx qy qz qw``), depth PNG / 5000 = m. RGB and depth are associated by
                    nearest stamp within 20 ms (greedy, one-to-one, closest pairs first); the pose is
                    interpolated at the depth stamp (the frame's stamp) between the bracketing
                    ground-truth stamps (slerp); frames outside the ground-truth span are dropped
                    (counted in ``dropped_no_pose``). Intrinsics from ``camera-intrinsics.txt`` when
                    present, else the freiburg1/2/3 values when the folder name says which, else the
                    ROS default (525, 525, 319.5, 239.5) with a warning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from neural_mapping.camera import R_to_quat, interpolate_pose_at, intrinsics, pose_to_T
from neural_mapping.errors import InputError
from neural_mapping.frame import Frame
from neural_mapping.io.base import (
    FrameRecord,
    IndexedSource,
    format_stamp,
    log,
    parse_stamp_ns,
    read_matrix,
    require_dir,
    write_depth_png,
    write_rgb,
)

DEFAULT_FPS = 30.0
_3DM_COLOR = re.compile(r"^frame-(\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)
_REPLICA_COLOR = re.compile(r"^frame(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
SEVEN_SCENES_K = intrinsics(585.0, 585.0, 320.0, 240.0)
TUM_K = {
    "freiburg1": intrinsics(517.3, 516.5, 318.6, 255.3),
    "freiburg2": intrinsics(520.9, 521.0, 325.1, 249.7),
    "freiburg3": intrinsics(535.4, 539.2, 320.1, 247.6),
}
TUM_DEFAULT_K = intrinsics(525.0, 525.0, 319.5, 239.5)
REPLICA_DEFAULT = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}


# ----------------------------------------------------------------------------- detection


def _3dmatch_dirs(root: Path) -> list[Path]:
    """Folders holding 3DMatch frames: the root itself, or its seq-* subfolders."""
    if any(_3DM_COLOR.match(p.name) for p in root.iterdir()):
        return [root]
    return sorted(d for d in root.iterdir() if d.is_dir() and any(_3DM_COLOR.match(p.name) for p in d.iterdir()))


def detect_format(root: Path) -> str | None:
    """'3dmatch' | 'replica' | 'tum' for a dataset folder, or None when nothing matches."""
    if (root / "rgb.txt").is_file() and (root / "depth.txt").is_file():
        return "tum"
    if (root / "results").is_dir() and (root / "traj.txt").is_file():
        return "replica"
    if _3dmatch_dirs(root):
        return "3dmatch"
    return None


def _frame_stamp(number: int, fps: float) -> int:
    return int(round(number * 1e9 / fps))


# ----------------------------------------------------------------------------- 3DMatch


def _find_up(root: Path, name: str, levels: int = 2) -> Path | None:
    p = root
    for _ in range(levels + 1):
        if (p / name).is_file():
            return p / name
        p = p.parent
    return None


def read_3dmatch(root: str | Path, fps: float = DEFAULT_FPS) -> IndexedSource:
    root = require_dir(Path(root))
    dirs = _3dmatch_dirs(root)
    if not dirs:
        raise InputError(f"{root}: no frame-XXXXXX.color.png|jpg files (3DMatch layout)")
    kfile = _find_up(root, "camera-intrinsics.txt")
    if kfile is None:
        log.warning("%s: no camera-intrinsics.txt; using the 7-Scenes intrinsics fx=fy=585 cx=320 cy=240", root)
        K = SEVEN_SCENES_K
    else:
        try:
            K = read_matrix(kfile, (3, 3))
        except (OSError, ValueError) as e:
            raise InputError(str(e)) from None
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError(f"{kfile}: focal lengths must be positive, got fx={K[0, 0]} fy={K[1, 1]}")
    records: list[FrameRecord] = []
    offset = 0
    for d in dirs:
        nums = []
        for p in sorted(d.iterdir()):
            m = _3DM_COLOR.match(p.name)
            if m:
                nums.append((int(m.group(1)), p))
        nums.sort()
        for n, cpath in nums:
            stem = d / f"frame-{m_num(cpath)}"
            records.append(FrameRecord(color=cpath, depth=Path(f"{stem}.depth.png"),
                                       stamp_ns=_frame_stamp(offset + n, fps), pose_file=Path(f"{stem}.pose.txt")))
        if nums:
            offset += nums[-1][0] + 1  # sequences follow one another in time
    return IndexedSource(str(root), "3dmatch", records, K, depth_scale=1000.0, invalid_depth=(0, 65535))


def m_num(color_path: Path) -> str:
    """'000123' from 'frame-000123.color.png'."""
    return _3DM_COLOR.match(color_path.name).group(1)


def write_3dmatch(frames: Iterable[Frame], out_dir: str | Path) -> int:
    """frame-XXXXXX.{color.png,depth.png (mm),pose.txt} + camera-intrinsics.txt; returns frames written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    K0 = None
    n = 0
    for i, f in enumerate(frames):
        K0 = _same_K(K0, f.K)
        stem = out / f"frame-{i:06d}"
        write_rgb(Path(f"{stem}.color.png"), f.rgb)
        write_depth_png(Path(f"{stem}.depth.png"), f.depth_m, 1000.0)
        np.savetxt(f"{stem}.pose.txt", f.T_WC, fmt="%.17g")
        n += 1
    if K0 is not None:
        np.savetxt(out / "camera-intrinsics.txt", K0, fmt="%.17g")
    return n


def _same_K(K0, K):
    if K0 is not None and not np.allclose(K0, K):
        raise ValueError("dataset layouts hold one camera: frames have different intrinsics")
    return np.asarray(K, dtype=np.float64) if K0 is None else K0


# ----------------------------------------------------------------------------- Replica


def read_replica(root: str | Path, fps: float = DEFAULT_FPS) -> IndexedSource:
    root = require_dir(Path(root))
    res = root / "results"
    traj = root / "traj.txt"
    if not res.is_dir():
        raise InputError(f"{res}: missing (Replica/NICE-SLAM layout needs results/ and traj.txt)")
    if not traj.is_file():
        raise InputError(f"{traj}: missing (Replica/NICE-SLAM layout needs results/ and traj.txt)")
    cam = dict(REPLICA_DEFAULT)
    cfile = _find_up(root, "cam_params.json", levels=1)
    if cfile is None:
        log.warning("%s: no cam_params.json; using the Replica defaults %s", root, REPLICA_DEFAULT)
    else:
        try:
            c = json.loads(cfile.read_text())["camera"]
            cam.update({k: c[k] for k in ("w", "h", "fx", "fy", "cx", "cy")})
            cam["scale"] = float(c.get("scale", REPLICA_DEFAULT["scale"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{cfile}: malformed camera parameters ({type(e).__name__}: {e}); "
                             "expected {{\"camera\": {{w, h, fx, fy, cx, cy[, scale]}}}}") from None
    if cam["fx"] <= 0 or cam["fy"] <= 0 or cam["scale"] <= 0:
        raise InputError(f"{cfile}: fx, fy and scale must be positive")
    K = intrinsics(cam["fx"], cam["fy"], cam["cx"], cam["cy"])
    try:
        poses = []
        for ln, line in enumerate(traj.read_text().splitlines(), 1):
            if not line.strip():
                continue
            vals = [float(x) for x in line.split()]
            if len(vals) != 16:
                raise ValueError(f"line {ln} has {len(vals)} numbers, expected 16 (a row-major 4x4)")
            poses.append(np.array(vals).reshape(4, 4))
    except ValueError as e:
        raise InputError(f"{traj}: {e}") from None
    records, no_pose = [], []
    for p in sorted(res.iterdir()):
        m = _REPLICA_COLOR.match(p.name)
        if not m:
            continue
        n = int(m.group(1))
        depth = res / f"depth{m.group(1)}.png"
        if n >= len(poses):  # counted (source_skipped) and logged when the frames are read
            no_pose.append((str(res / p.stem), f"no line {n + 1} in {traj}"))
            continue
        records.append(FrameRecord(color=p, depth=depth, stamp_ns=_frame_stamp(n, fps), T_WC=poses[n]))
    records.sort(key=lambda r: r.stamp_ns)
    if not records:
        raise InputError(f"{res}: no frameNNNNNN.jpg|png images")
    return IndexedSource(str(root), "replica", records, K, depth_scale=cam["scale"], listing_skips=no_pose)


def write_replica(frames: Iterable[Frame], out_dir: str | Path, scale: float = 6553.5, color_ext: str = "jpg") -> int:
    """results/frameNNNNNN.<color_ext> + depthNNNNNN.png (m * scale), traj.txt, cam_params.json.

    ``color_ext`` 'jpg' (the layout's usual, lossy, quality 95) or 'png' (lossless).
    """
    out = Path(out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    K0, lines, size = None, [], None
    for i, f in enumerate(frames):
        K0 = _same_K(K0, f.K)
        size = (f.width, f.height)
        write_rgb(out / "results" / f"frame{i:06d}.{color_ext}", f.rgb)
        write_depth_png(out / "results" / f"depth{i:06d}.png", f.depth_m, scale)
        lines.append(" ".join(f"{v:.18e}" for v in f.T_WC.reshape(-1)))
    (out / "traj.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    if K0 is not None:
        cam = {"w": size[0], "h": size[1], "fx": K0[0, 0], "fy": K0[1, 1], "cx": K0[0, 2], "cy": K0[1, 2], "scale": scale}
        (out / "cam_params.json").write_text(json.dumps({"camera": cam}, indent=4) + "\n")
    return len(lines)


# ----------------------------------------------------------------------------- TUM


def _read_stamp_list(path: Path) -> list[tuple[int, str]]:
    """``timestamp value...`` lines ('#' comments) -> [(stamp_ns, rest of line)]."""
    if not path.is_file():
        raise InputError(f"{path}: missing (TUM layout needs rgb.txt, depth.txt and groundtruth.txt)")
    out = []
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split(None, 1)
        try:
            t = parse_stamp_ns(parts[0])
        except ValueError:
            raise InputError(f"{path}: line {ln}: {parts[0]!r} is not a time stamp") from None
        if len(parts) < 2:
            raise InputError(f"{path}: line {ln}: expected a time stamp and a value")
        out.append((t, parts[1].strip()))
    return out


def associate(stamps_a: np.ndarray, stamps_b: np.ndarray, max_diff_ns: int) -> list[tuple[int, int]]:
    """One-to-one association of two stamp lists (as TUM's associate.py): among all pairs
    within ``max_diff_ns``, take the closest first; returns (index_a, index_b) sorted by a."""
    a = np.asarray(stamps_a, dtype=np.int64)
    b = np.asarray(stamps_b, dtype=np.int64)
    order_b = np.argsort(b, kind="stable")
    bs = b[order_b]
    cands = []
    for i, t in enumerate(a):
        lo = np.searchsorted(bs, t - max_diff_ns, side="left")
        hi = np.searchsorted(bs, t + max_diff_ns, side="right")
        for k in range(lo, hi):
            cands.append((abs(int(bs[k]) - int(t)), i, int(order_b[k])))
    cands.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in cands:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def read_tum_groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """groundtruth.txt -> (stamps_ns (N,) int64 sorted, T_WC (N, 4, 4))."""
    rows = _read_stamp_list(path)
    stamps, Ts = [], []
    for t, rest in rows:
        try:
            v = [float(x) for x in rest.split()]
        except ValueError:
            raise InputError(f"{path}: stamp {format_stamp(t)}: not numbers: {rest!r}") from None
        if len(v) != 7:
            raise InputError(f"{path}: stamp {format_stamp(t)}: expected tx ty tz qx qy qz qw, got {len(v)} numbers")
        if not np.all(np.isfinite(v)) or np.linalg.norm(v[3:]) < 1e-6:
            continue  # invalid mocap sample: skip (TUM marks lost tracking this way)
        stamps.append(t)
        Ts.append(pose_to_T(v[:3], v[3:]))
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    return np.asarray(stamps, dtype=np.int64)[order], np.asarray(Ts).reshape(-1, 4, 4)[order]


class TumSource(IndexedSource):
    dropped_no_pose: int = 0


def read_tum(root: str | Path, max_diff_s: float = 0.02, max_pose_gap_s: float = 0.5) -> TumSource:
    root = require_dir(Path(root))
    rgb = _read_stamp_list(root / "rgb.txt")
    depth = _read_stamp_list(root / "depth.txt")
    gt_t, gt_T = read_tum_groundtruth(root / "groundtruth.txt")
    if len(gt_t) < 1:
        raise InputError(f"{root / 'groundtruth.txt'}: no poses")
    kfile = root / "camera-intrinsics.txt"
    if kfile.is_file():
        try:
            K = read_matrix(kfile, (3, 3))
        except (OSError, ValueError) as e:
            raise InputError(str(e)) from None
    else:
        key = next((k for k in TUM_K if k in root.resolve().name), None)
        K = TUM_K[key] if key else TUM_DEFAULT_K
        if key is None:
            log.warning("%s: no camera-intrinsics.txt and no freiburgN in the name; using fx=fy=525 cx=319.5 cy=239.5",
                        root)
    pairs = associate([t for t, _ in rgb], [t for t, _ in depth], int(round(max_diff_s * 1e9)))
    records, dropped = [], 0
    rel = (gt_t - gt_t[0]).astype(np.float64) * 1e-9  # relative seconds keep precision
    for i, j in pairs:
        t = depth[j][0]
        T = interpolate_pose_at(rel, gt_T, (t - gt_t[0]) * 1e-9, max_gap=max_pose_gap_s)
        if T is None:
            dropped += 1
            continue
        records.append(FrameRecord(color=root / rgb[i][1], depth=root / depth[j][1], stamp_ns=t, T_WC=T))
    records.sort(key=lambda r: r.stamp_ns)
    src = TumSource(str(root), "tum", records, K, depth_scale=5000.0)
    src.dropped_no_pose = dropped
    src.unassociated = len(rgb) - len(pairs)
    return src


def write_tum(frames: Iterable[Frame], out_dir: str | Path) -> int:
    """rgb/<t>.png, depth/<t>.png (m * 5000), rgb.txt, depth.txt, groundtruth.txt, camera-intrinsics.txt."""
    out = Path(out_dir)
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    head = "# {} images\n# file: written by neural_mapping\n# timestamp filename\n"
    rl, dl = [head.format("color")], [head.format("depth")]
    gl = ["# ground truth trajectory\n# file: written by neural_mapping\n# timestamp tx ty tz qx qy qz qw\n"]
    K0, n = None, 0
    for f in frames:
        K0 = _same_K(K0, f.K)
        ts = format_stamp(f.stamp_ns)
        write_rgb(out / "rgb" / f"{ts}.png", f.rgb)
        write_depth_png(out / "depth" / f"{ts}.png", f.depth_m, 5000.0)
        rl.append(f"{ts} rgb/{ts}.png\n")
        dl.append(f"{ts} depth/{ts}.png\n")
        q = R_to_quat(f.T_WC[:3, :3])
        t = f.T_WC[:3, 3]
        gl.append(f"{ts} " + " ".join(f"{v:.9f}" for v in (*t, *q)) + "\n")
        n += 1
    (out / "rgb.txt").write_text("".join(rl))
    (out / "depth.txt").write_text("".join(dl))
    (out / "groundtruth.txt").write_text("".join(gl))
    if K0 is not None:
        np.savetxt(out / "camera-intrinsics.txt", K0, fmt="%.17g")
    return n


READERS = {"3dmatch": read_3dmatch, "replica": read_replica, "tum": read_tum}
WRITERS = {"3dmatch": write_3dmatch, "replica": write_replica, "tum": write_tum}
