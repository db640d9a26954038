"""The map file: one file holding everything needed to use (and resume) a map.

Layout (all little surprises avoided: it is readable with a hex dump)::

    b"NEURALMAP\\n"                       magic (10 bytes)
    one line of JSON + b"\\n"             header: format_version, payload_bytes,
                                         payload_sha256, field kind, resolved config,
                                         bounds, counters, whether keyframes are in,
                                         the dtype the field's tables are stored in
    payload_bytes bytes                  torch.save() of Mapper.state_dict() with numpy
                                         arrays stored as tensors (so torch.load runs
                                         with weights_only=True: no code is unpickled)

Format 2 (this one) stores the field's large float32 tensors (the hash / spline tables: 16.8 of
the cpu preset's 17 MB) as float16 in a map saved without keyframes, which halves the file; they
are float32 again on load. Their relative rounding (2^-11) moves the SDF by micrometres (tested).
A map saved with keyframes (to resume training exactly) keeps float32. Format 1 files (all
float32) are read as they are; the next save writes format 2.

Writes are atomic: the file is written to a temporary file in the same directory,
flushed to disk and moved over the target with ``os.replace``; a failure leaves the
previous file untouched. Reads check the magic, the format version, the length
(truncation) and the SHA-256 of the payload (corruption) before unpickling anything,
and raise :class:`MapFileError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neural_mapping.errors import InputError

log = logging.getLogger(__name__)

MAGIC = b"NEURALMAP\n"
FORMAT_VERSION = 2
#: format versions this code reads (1: every tensor float32)
READABLE_VERSIONS = (1, 2)
_MAX_HEADER = 1 << 20
_NUMPY_PATHS = "__numpy_paths__"
_HALF_KEYS = "__half_field_keys__"
#: field tensors with at least this many float32 elements are stored as float16 (tables, not MLPs)
HALF_MIN_NUMEL = 1 << 14
_TMP_SUFFIX = ".tmp"
#: temporary files of save_map: "." + target name + "." + mkstemp's 8 random characters + ".tmp"
_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
#: temporary files untouched this long (s) are left over from a killed save
STALE_TMP_S = 60.0


class MapFileError(InputError):
    """A map file that cannot be used: missing, not a map, another version, truncated, corrupted."""


# ----------------------------------------------------------------------------- names inside a map directory

#: save/load names given by clients (the node's save_map/load_map): one plain file name inside map_dir
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def check_map_name(name: str) -> str | None:
    """None if ``name`` is an acceptable map file name, else the reason it is refused."""
    if not name:
        return "empty name"
    if "/" in name or "\\" in name or os.sep in name:
        return f"name {name!r} contains a path separator; give a plain file name inside map_dir"
    if ".." in name:
        return f"name {name!r} contains '..'"
    if not _NAME_RE.match(name):
        return f"name {name!r} has characters other than letters, digits, '_', '-', '.' or starts with '.'"
    return None


def resolve_in_dir(map_dir: str, name: str) -> Path:
    """Absolute path of ``name`` inside ``map_dir``; ValueError if it would leave the directory."""
    why = check_map_name(name)
    if why:
        raise ValueError(why)
    root = Path(os.path.expanduser(map_dir)).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ValueError(f"name {name!r} resolves outside map_dir {root}")
    return path


# ----------------------------------------------------------------------------- numpy <-> tensor


def _to_tensors(obj, path: tuple, paths: list):
    """Copy of a state dict with numpy arrays as tensors (their paths recorded) and numpy scalars as Python."""
    if isinstance(obj, np.ndarray):
        paths.append(list(path))
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_tensors(v, path + (k,), paths) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_to_tensors(v, path + (i,), paths) for i, v in enumerate(obj)]
        return out if isinstance(obj, list) else tuple(out)
    return obj


def _restore_numpy(d: dict, paths, where: str) -> None:
    """Turn the tensors at ``paths`` (lists of keys/indices into ``d``) back into numpy arrays;
    MapFileError when a path does not lead to a tensor (a crafted or foreign payload)."""
    if not isinstance(paths, list):
        raise MapFileError(f"{where}: map payload is corrupted ({_NUMPY_PATHS} is not a list)")
    for p in paths:
        try:
            if not isinstance(p, list) or not p:
                raise TypeError("not a non-empty list")
            parent = d
            for k in p[:-1]:
                parent = parent[k]
            leaf = parent[p[-1]]
            if not torch.is_tensor(leaf):
                raise TypeError(f"{type(leaf).__name__}, not a tensor")
            parent[p[-1]] = leaf.numpy()
        except (KeyError, IndexError, TypeError) as e:
            raise MapFileError(f"{where}: map payload is corrupted ({_NUMPY_PATHS} entry {p!r}: {e})") from None


def _halve_tables(field: dict) -> list[str]:
    """Store the large float32 tensors of a field state dict as float16 (in place); their keys."""
    keys = [k for k, v in field.items()
            if torch.is_tensor(v) and v.dtype == torch.float32 and v.numel() >= HALF_MIN_NUMEL]
    for k in keys:
        field[k] = field[k].to(torch.float16)
    return keys


def _restore_tables(d: dict, keys, where: str) -> None:
    """float32 again for the field tensors stored as float16; MapFileError for a bad key list."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise MapFileError(f"{where}: map payload is corrupted ({_HALF_KEYS} is not a list of names)")
    field = d.get("field")
    for k in keys:
        if not isinstance(field, dict) or not torch.is_tensor(field.get(k)) or field[k].dtype != torch.float16:
            raise MapFileError(f"{where}: map payload is corrupted ({_HALF_KEYS} entry {k!r} is not a float16 tensor)")
        field[k] = field[k].to(torch.float32)


# ----------------------------------------------------------------------------- save / load


def save_map(mapper, path: str | Path, include_keyframes: bool = False) -> Path:
    """Write ``mapper`` to ``path`` atomically; returns the path.

    ``include_keyframes`` adds the keyframe buffer and optimiser state so training can
    resume exactly where it stopped (bigger file); without them the loaded map answers
    queries and renders identically and training can still continue from its weights.
    """
    path = Path(path)
    state = mapper.state_dict(include_keyframes=include_keyframes)
    paths: list = []
    payload_obj = _to_tensors(state, (), paths)
    payload_obj[_NUMPY_PATHS] = paths
    half = [] if include_keyframes else _halve_tables(payload_obj["field"])
    payload_obj[_HALF_KEYS] = half
    buf = io.BytesIO()
    torch.save(payload_obj, buf)
    payload = buf.getvalue()
    b = mapper.bounds()
    header = {
        "format_version": FORMAT_VERSION,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "kind": state.get("kind"),
        "config": state.get("cfg"),
        "bounds": None if b is None else [np.asarray(b[0]).tolist(), np.asarray(b[1]).tolist()],
        "stats": {k: v for k, v in state.get("stats", {}).items() if isinstance(v, (int, float, str))},
        "keyframes": bool(include_keyframes),
        "tables": "float16" if half else "float32",
        "torch": torch.__version__,
    }
    head = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
    d = path.resolve().parent
    if not d.is_dir():
        raise MapFileError(f"{path}: directory {d} does not exist")
    remove_stale_temp_files(d)
    atomic_write(path, MAGIC + head + b"\n" + payload)
    return path


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory (fsync, then
    os.replace): a failure at any point leaves the previous file untouched and no temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_stale_temp_files(directory: str | Path, older_than_s: float = STALE_TMP_S) -> list[Path]:
    """Delete the temporary files of saves that were killed (SIGKILL, power loss) in ``directory``:
    names ``.NAME.XXXXXXXX.tmp`` as :func:`save_map` makes them, holding the start of a map file
    (or nothing yet), untouched for ``older_than_s`` seconds (a save in progress in another process
    writes continuously). Returns the paths removed; files it cannot remove are left."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        if not _TMP_RE.match(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than_s:
                continue
            with open(e.path, "rb") as f:
                head = f.read(len(MAGIC))
            if MAGIC.startswith(head):  # empty, or the start of a map file
                os.unlink(e.path)
                removed.append(Path(e.path))
                log.info("removed %s, the temporary file of an interrupted save", e.path)
        except OSError:
            continue
    return removed


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_header(path: str | Path) -> tuple[dict, int]:
    """(header dict, payload offset) after checking the magic and the format version."""
    path = Path(path)
    if not path.exists():
        raise MapFileError(f"{path}: map file not found")
    if not path.is_file():
        raise MapFileError(f"{path}: not a file")
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            raise MapFileError(f"{path}: not a neural_mapping map file (bad magic bytes)")
        line = f.readline(_MAX_HEADER)
    if not line.endswith(b"\n"):
        raise MapFileError(f"{path}: map file is truncated or corrupted (incomplete header)")
    try:
        header = json.loads(line)
    except ValueError:
        raise MapFileError(f"{path}: map file header is corrupted (not JSON)") from None
    if not isinstance(header, dict) or "format_version" not in header:
        raise MapFileError(f"{path}: map file header is corrupted (no format_version)")
    ver = header["format_version"]
    if ver not in READABLE_VERSIONS:
        raise MapFileError(f"{path}: map format version {ver} is not supported by this neural_mapping "
                           f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    if ver != FORMAT_VERSION:
        log.info("%s: map format version %s (float32 tables) read as it is; saving it again writes version %s",
                 path, ver, FORMAT_VERSION)
    return header, len(MAGIC) + len(line)


def load_state(path: str | Path) -> dict:
    """The verified state dict stored in a map file (numpy arrays restored)."""
    path = Path(path)
    header, offset = read_header(path)
    n = int(header.get("payload_bytes", -1))
    with open(path, "rb") as f:
        f.seek(offset)
        payload = f.read()
    if len(payload) < n:
        raise MapFileError(f"{path}: map file is truncated ({len(payload)} of {n} payload bytes present)")
    if len(payload) > n:
        raise MapFileError(f"{path}: map file is corrupted ({len(payload) - n} unexpected bytes after the payload)")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise MapFileError(f"{path}: map file is corrupted (payload checksum mismatch)")
    try:
        d = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # a payload that passed the checksum but does not unpickle
        raise MapFileError(f"{path}: map payload cannot be read: {e}") from None
    if not isinstance(d, dict):
        raise MapFileError(f"{path}: map payload is not a state dict")
    _restore_numpy(d, d.pop(_NUMPY_PATHS, []), str(path))
    _restore_tables(d, d.pop(_HALF_KEYS, []), str(path))
    return d


def load_map(path: str | Path, device: str | torch.device | None = None):
    """A Mapper restored from ``path`` (on ``device``, default the saved config's device,
    falling back to CPU when the file asks for CUDA and none is available)."""
    from neural_mapping.mapper import Mapper

    d = load_state(path)
    if device is None:
        want = (d.get("cfg") or {}).get("device", "auto")
        if want == "cuda" and not torch.cuda.is_available():
            log.warning("%s: saved for cuda, which is not available here; loading on cpu", path)
            device = "cpu"
    try:
        return Mapper.from_state_dict(d, device=device)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise MapFileError(f"{path}: map file does not match this version of neural_mapping: {e}") from None


__all__ = ["MapFileError", "save_map", "remove_stale_temp_files", "load_map", "load_state", "read_header", "FORMAT_VERSION", "check_map_name",
           "resolve_in_dir"]
