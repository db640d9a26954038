"""A submapped map on disk: a directory with a manifest and one file per submap (docs/submaps.md).

::

    MAP_DIR/manifest.json                 format, config, grid, robot id, counters, the submaps
                                          (id, key, robot_id, version, file, bytes, sha256, bounds)
    MAP_DIR/submaps/<id>.v<version>.nmsub one encoded submap (neural_mapping.submaps.codec)

Every file is written atomically (temporary file, fsync, ``os.replace``); the manifest last, so a
killed save leaves the previous manifest naming complete files. Files no manifest names are
removed after the manifest is written. A load checks each file's size and SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch

from neural_mapping.config import apply_overrides, from_dict, to_dict
from neural_mapping.mapfile import MapFileError
from neural_mapping.mapper import MapperStats
from neural_mapping.submaps.cache import SUFFIX, atomic_write, file_name, mapper_from_state
from neural_mapping.submaps.codec import SubmapCodecError, decode_submap, encode_state, encode_submap
from neural_mapping.submaps.coverage_union import merge_into
from neural_mapping.submaps.submap import Submap

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "neural_mapping.submaps"
FORMAT_VERSION = 1


def is_map_dir(path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _submap_bytes(smap, sub: Submap) -> bytes:
    """The bytes of a submap: encoded from its mapper when resident, else its spilled file."""
    if sub.mapper is not None:
        return encode_submap(sub)
    return smap.cache.file_of(sub.name, sub.version).read_bytes()


def save_map_dir(smap, path) -> Path:
    """Write the map (every submap, active ones without their keyframes) to directory ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "submaps").mkdir(exist_ok=True)
    entries = []
    with smap.lock:
        for sub in smap.submaps():
            if sub.mapper is not None and not sub.frozen:  # active: a new version of its weights
                sub.version += 1
                sub.refresh_bounds()
            name = file_name(sub.name, sub.version)
            target = path / "submaps" / name
            data = None
            if not target.exists():
                data = _submap_bytes(smap, sub)
                atomic_write(target, data)
            else:
                data = target.read_bytes()
            b = sub.bounds_W
            entries.append({"id": sub.id, "key": list(sub.key), "robot_id": sub.robot_id, "version": sub.version,
                            "file": f"submaps/{name}", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                            "bounds": None if b is None else [b[0].tolist(), b[1].tolist()]})
        st = {k: v for k, v in dataclasses.asdict(smap.stats).items() if isinstance(v, (int, float, str))}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": to_dict(smap.cfg),
                    "grid": smap.grid.as_dict(), "robot_id": smap.robot_id, "stats": st, "submaps": entries,
                    "torch": torch.__version__}
    atomic_write(path / MANIFEST, json.dumps(manifest, indent=1).encode())
    keep = {e["file"].split("/", 1)[1] for e in entries}
    for f in (path / "submaps").iterdir():
        if f.name.endswith(SUFFIX) and f.name not in keep:
            try:
                f.unlink()
            except OSError:
                pass
    if smap.cache._tmp is not None:  # spills of a map never saved went to a temporary directory
        smap.cache.adopt_directory(path, {})
    return path


def read_manifest(path) -> dict:
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise MapFileError(f"{path}: not a submap directory (no {MANIFEST})")
    try:
        m = json.loads(p.read_text())
    except ValueError:
        raise MapFileError(f"{p}: manifest is corrupted (not JSON)") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise MapFileError(f"{p}: not a neural_mapping submap manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise MapFileError(f"{p}: submap directory format {m.get('format_version')!r} is not supported "
                           f"(this neural_mapping reads {FORMAT_VERSION})")
    return m


def load_map_dir(path, device=None, max_resident_mb: float | None = None):
    """The :class:`~neural_mapping.submaps.collection.SubmapMap` saved in directory ``path`` (frozen
    submaps; resident within ``submaps.max_resident_mb`` (or ``max_resident_mb``), the others read
    back when needed)."""
    from neural_mapping.submaps.collection import SubmapMap

    path = Path(path)
    m = read_manifest(path)
    try:
        cfg = from_dict(m["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise MapFileError(f"{path}: manifest config does not match this version of neural_mapping: {e}") from None
    if max_resident_mb is not None:
        cfg = apply_overrides(cfg, {"submaps.max_resident_mb": float(max_resident_mb)})
    if device is None and cfg.device == "cuda" and not torch.cuda.is_available():
        log.warning("%s: saved for cuda, which is not available here; loading on cpu", path)
        device = "cpu"
    smap = SubmapMap(cfg, directory=path, device=device)
    if not smap.grid.same_as(m.get("grid", {})):
        raise MapFileError(f"{path}: the manifest's grid {m.get('grid')} does not match its config")
    for e in m.get("submaps", []):
        f = path / e["file"]
        try:
            data = f.read_bytes()
        except OSError as err:
            raise MapFileError(f"{f}: cannot read submap file ({err.strerror or err})") from None
        if len(data) != e["bytes"] or hashlib.sha256(data).hexdigest() != e["sha256"]:
            raise MapFileError(f"{f}: submap file is truncated or corrupted (size/checksum mismatch with the manifest)")
        try:
            rec, state = decode_submap(data)
            mapper = mapper_from_state(state, smap.device)
        except (SubmapCodecError, KeyError, ValueError, RuntimeError) as err:
            raise MapFileError(f"{f}: {err}") from None
        sub = Submap(rec.key, smap.grid, mapper, robot_id=rec.robot_id, version=rec.version, frozen=True)
        smap._submaps[(rec.robot_id, rec.key)] = sub
        merge_into(smap._frozen_cov, mapper.coverage, sub.origin_W)
        if f.name != file_name(sub.name, sub.version):
            raise MapFileError(f"{f}: holds submap {sub.name} v{sub.version}, not what its name says")
        smap.cache.add(sub)
    smap._cov = None
    st = m.get("stats", {})
    known = {f.name for f in dataclasses.fields(MapperStats)}
    smap.stats = MapperStats(**{k: v for k, v in st.items() if k in known})
    return smap


def load_any(path, device=None):
    """A map file (``Mapper``) or a submap directory (``SubmapMap``), whichever ``path`` is."""
    if Path(path).is_dir():
        return load_map_dir(path, device=device)
    from neural_mapping.mapfile import load_map

    return load_map(path, device=device)


__all__ = ["save_map_dir", "load_map_dir", "load_any", "is_map_dir", "read_manifest", "encode_state"]
