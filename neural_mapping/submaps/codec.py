"""A frozen submap as bytes: what the fleet publishes over DDS and Ray workers return.

Layout (docs/submaps.md)::

    b"NMSUBMAP\\n"                 magic
    one line of JSON + b"\\n"      header: format, id, key, robot_id, version, frame, origin_W, grid,
                                  cell_lo/hi, bounds_lo/hi (map frame), kind, payload_bytes, payload_sha256
    payload                       torch.save of Mapper.state_dict() without keyframes or optimiser
                                  (large tables float16 as in mapfile format 2; numpy arrays as tensors,
                                  so torch.load(weights_only=True) reads it)

:func:`decode_submap` checks magic, format, length and checksum before unpickling anything.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import torch

from neural_mapping.mapfile import MapFileError, _HALF_KEYS, _NUMPY_PATHS, _halve_tables, _restore_numpy, _restore_tables, _to_tensors

MAGIC = b"NMSUBMAP\n"
FORMAT = 1
_MAX_HEADER = 1 << 20


class SubmapCodecError(ValueError):
    """The bytes are not a readable encoded submap."""


@dataclass
class SubmapRecord:
    """The header of an encoded submap (see module doc)."""

    id: str
    key: tuple[int, int]
    robot_id: str
    version: int
    frame: str
    origin_W: np.ndarray  # (3,)
    grid: dict
    cell_lo: np.ndarray  # (2,)
    cell_hi: np.ndarray
    bounds_lo: np.ndarray | None  # (3,) map frame
    bounds_hi: np.ndarray | None
    kind: str
    payload_bytes: int
    payload_sha256: str

    @classmethod
    def from_header(cls, h: dict) -> "SubmapRecord":
        def arr(x):
            return None if x is None else np.asarray(x, np.float64)

        return cls(id=str(h["id"]), key=(int(h["key"][0]), int(h["key"][1])), robot_id=str(h.get("robot_id", "")),
                   version=int(h["version"]), frame=str(h.get("frame", "map")), origin_W=arr(h["origin_W"]),
                   grid=dict(h["grid"]), cell_lo=arr(h["cell_lo"]), cell_hi=arr(h["cell_hi"]),
                   bounds_lo=arr(h.get("bounds_lo")), bounds_hi=arr(h.get("bounds_hi")), kind=str(h.get("kind", "sdf")),
                   payload_bytes=int(h["payload_bytes"]), payload_sha256=str(h["payload_sha256"]))


def encode_state(meta: dict, state: dict) -> bytes:
    """Bytes of a submap from its metadata (:meth:`Submap.record`) and its mapper's state dict."""
    state = {k: v for k, v in state.items() if k not in ("keyframes", "optimizer", "generator")}
    paths: list = []
    obj = _to_tensors(state, (), paths)
    obj[_NUMPY_PATHS] = paths
    obj[_HALF_KEYS] = _halve_tables(obj["field"])
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    head = dict(meta, format=FORMAT, kind=state.get("kind", "sdf"), payload_bytes=len(payload),
                payload_sha256=hashlib.sha256(payload).hexdigest())
    return MAGIC + json.dumps(head, separators=(",", ":")).encode() + b"\n" + payload


def encode_submap(submap) -> bytes:
    """Bytes of a resident submap (weights, coverage, bounds, counters; no keyframes)."""
    if submap.mapper is None:
        raise ValueError(f"submap {submap.id} is not resident; load it first")
    return encode_state(submap.record(), submap.mapper.state_dict(include_keyframes=False))


def read_record(data: bytes) -> tuple[SubmapRecord, int]:
    """(header, payload offset) of encoded bytes, without reading the payload."""
    data = memoryview(data)
    if bytes(data[:len(MAGIC)]) != MAGIC:
        raise SubmapCodecError("not an encoded submap (bad magic bytes)")
    end = bytes(data[len(MAGIC):len(MAGIC) + _MAX_HEADER]).find(b"\n")
    if end < 0:
        raise SubmapCodecError("encoded submap is truncated (incomplete header)")
    try:
        h = json.loads(bytes(data[len(MAGIC):len(MAGIC) + end]))
        if int(h.get("format", -1)) != FORMAT:
            raise SubmapCodecError(f"encoded submap format {h.get('format')!r} is not supported (expected {FORMAT})")
        rec = SubmapRecord.from_header(h)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        if isinstance(e, SubmapCodecError):
            raise
        raise SubmapCodecError(f"encoded submap header is corrupted: {e}") from None
    return rec, len(MAGIC) + end + 1


def decode_submap(data: bytes) -> tuple[SubmapRecord, dict]:
    """(header, Mapper state dict) of encoded bytes; :class:`SubmapCodecError` when they are not whole."""
    rec, off = read_record(data)
    payload = bytes(memoryview(data)[off:])
    if len(payload) != rec.payload_bytes:
        raise SubmapCodecError(f"encoded submap {rec.id}: {len(payload)} payload bytes, expected {rec.payload_bytes}")
    if hashlib.sha256(payload).hexdigest() != rec.payload_sha256:
        raise SubmapCodecError(f"encoded submap {rec.id}: payload checksum mismatch")
    try:
        d = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a payload that passed the checksum but does not unpickle
        raise SubmapCodecError(f"encoded submap {rec.id}: payload cannot be read: {e}") from None
    try:
        _restore_numpy(d, d.pop(_NUMPY_PATHS, []), rec.id)
        _restore_tables(d, d.pop(_HALF_KEYS, []), rec.id)
    except (MapFileError, AttributeError) as e:
        raise SubmapCodecError(f"encoded submap {rec.id}: {e}") from None
    return rec, d
