"""The bounded cache of frozen submaps: resident up to a budget, spilled to disk beyond it.

Frozen submaps are kept in least-recently-used order. When the resident bytes of the frozen
ones plus those the owner pins (the active submaps, never spilled) exceed ``max_resident_bytes``,
the least recently used frozen submaps are written to ``DIR/submaps/<id>.v<version>.nmsub`` (the
:mod:`~neural_mapping.submaps.codec` bytes, atomically) and their mapper dropped; :meth:`mapper_of`
loads one back. A frozen submap's weights already went through the codec when it froze
(:meth:`SubmapCache.freeze`), so a spilled and reloaded submap answers exactly as before.
Without a directory the spills go to a private temporary directory, removed with the cache.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from neural_mapping.mapfile import atomic_write
from neural_mapping.submaps.codec import decode_submap, encode_submap
from neural_mapping.submaps.submap import Submap, mapper_nbytes

log = logging.getLogger(__name__)

SUFFIX = ".nmsub"


def file_name(name: str, version: int) -> str:
    return f"{name}.v{int(version)}{SUFFIX}"


def mapper_from_state(state: dict, device):
    from neural_mapping.mapper import Mapper

    return Mapper.from_state_dict(state, device=device)


class SubmapCache:
    """Frozen submaps, resident within a byte budget (see module doc)."""

    def __init__(self, directory: str | Path | None, max_resident_bytes: float, device=None) -> None:
        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="neural_mapping_submaps_")
            directory = self._tmp.name
        self.directory = Path(directory)
        self.max_resident_bytes = float(max_resident_bytes)
        self.device = device
        self.lock = threading.RLock()
        self._lru: OrderedDict[str, Submap] = OrderedDict()  # resident frozen submaps, oldest first
        self.on_disk: dict[str, int] = {}  # id -> version of its file in directory/submaps
        self.spills = 0
        self.reloads = 0

    def file_of(self, name: str, version: int) -> Path:
        """``DIR/submaps/<id>.v<version>.nmsub``: a version's file is never overwritten by another's, so
        spills into a saved map directory leave the files its manifest names intact."""
        return self.directory / "submaps" / file_name(name, version)

    # ------------------------------------------------------------------ residency

    def freeze(self, sub: Submap, pinned_bytes: int = 0) -> None:
        """Freeze a submap that was trained: its state through the codec (keyframes and optimiser
        dropped, tables rounded as the bytes carry them), version + 1, then kept resident."""
        sub.version += 1
        sub.refresh_bounds()
        _, state = decode_submap(encode_submap(sub))
        sub.mapper = mapper_from_state(state, self.device)
        sub.frozen = True
        sub.nbytes = mapper_nbytes(sub.mapper)
        self.add(sub, pinned_bytes)

    def add(self, sub: Submap, pinned_bytes: int = 0) -> None:
        """Take a frozen submap (resident or already on disk)."""
        with self.lock:
            if sub.mapper is not None:
                self._lru[sub.name] = sub
                self._lru.move_to_end(sub.name)
            else:
                self._lru.pop(sub.name, None)
            self.enforce(pinned_bytes)

    def discard(self, sub: Submap) -> None:
        """Forget a submap (it is being thawed: the owner trains a new mapper for it)."""
        with self.lock:
            if self._lru.get(sub.id) is sub:
                del self._lru[sub.name]

    def resident_bytes(self) -> int:
        with self.lock:
            return sum(s.nbytes for s in self._lru.values())

    def enforce(self, pinned_bytes: int = 0) -> None:
        """Spill least recently used submaps until resident + pinned bytes fit the budget."""
        with self.lock:
            total = self.resident_bytes() + pinned_bytes
            while total > self.max_resident_bytes and self._lru:
                sid, sub = self._lru.popitem(last=False)
                self.spill(sub)
                total -= sub.nbytes

    def spill(self, sub: Submap) -> None:
        """Write the submap's bytes (unless its version is on disk already) and drop its mapper."""
        if sub.mapper is None:
            return
        path = self.file_of(sub.name, sub.version)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, encode_submap(sub))
        self.on_disk[sub.name] = max(sub.version, self.on_disk.get(sub.name, -1))
        sub.mapper = None
        self.spills += 1
        log.debug("spilled submap %s v%d (%.1f MB)", sub.name, sub.version, sub.nbytes / 1e6)

    def mapper_of(self, sub: Submap, pinned_bytes: int = 0):
        """The submap's mapper, loaded back from disk when it was spilled (then the budget is enforced,
        this one kept)."""
        with self.lock:
            m = sub.mapper
            if m is not None:
                if sub.name in self._lru:
                    self._lru.move_to_end(sub.name)
                return m
            rec, state = decode_submap(self.file_of(sub.name, sub.version).read_bytes())
            m = mapper_from_state(state, self.device)
            sub.mapper = m
            sub.nbytes = mapper_nbytes(m)
            self.reloads += 1
            self._lru[sub.name] = sub
            self._lru.move_to_end(sub.name)
            self.enforce(pinned_bytes + sub.nbytes)  # room for this one first: spill others, not it
            if sub.name not in self._lru:  # the budget holds less than this one submap: keep it anyway
                self._lru[sub.name] = sub
                sub.mapper = m
            return m

    def adopt_directory(self, directory: Path, versions: dict[str, int]) -> None:
        """Use ``directory`` (a map directory just saved or loaded) for spills; its files hold ``versions``."""
        with self.lock:
            if self._tmp is not None and Path(self._tmp.name) != Path(directory):
                old = self._tmp
                self._tmp = None
                shutil.rmtree(old.name, ignore_errors=True)
            self.directory = Path(directory)
            self.on_disk = dict(versions)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
