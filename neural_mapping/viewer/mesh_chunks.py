"""The live mesh in the browser, cut into chunks so that only the parts that changed are resent.

viser sends a scene node whole: updating one mesh handle resends all its vertices and faces.
A live map changes a few places at a time (the mesh extractor recomputes only the tiles whose
surface moved or were newly observed), so the mesh is shown as one handle per chunk: a cube of
``chunk_m`` on a global lattice. Each face goes to the chunk holding its centroid; a chunk's
content is identified by a digest of its faces' vertex coordinates and colours, and a chunk is
resent only when its digest changed (removed when it emptied). Chunks of two mesh tiles
(64 voxels) keep the handle count low (a room is a few dozen) while a change far away resends
nothing. Digesting works on the merged mesh (after the extractor's welding and small-component
removal), so the browser shows exactly the mesh the other products publish.

Vertex colours travel as a GLB (:mod:`.glb`, double-sided; ``add_mesh_simple`` has one colour).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class ChunkUpdate:
    chunks: int = 0  # chunks now shown
    sent: int = 0  # chunks (re)sent by this update
    removed: int = 0
    triangles_sent: int = 0
    triangles: int = 0  # of the whole mesh
    bytes_sent: int = 0  # geometry bytes handed to viser (GLB or raw arrays) by this update
    seconds: float = 0.0


def split_chunks(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, chunk_m: float):
    """{chunk key (3 ints): (verts (v, 3) float32, faces (f, 3) uint32, colors (v, 3) uint8 | None)}."""
    if len(faces) == 0:
        return {}
    cen = verts[faces].mean(axis=1)
    idx = np.floor(cen / chunk_m).astype(np.int64)
    idx -= idx.min(0)
    span = idx.max(0) + 1
    key = (idx[:, 0] * span[1] + idx[:, 1]) * span[2] + idx[:, 2]
    order = np.argsort(key, kind="stable")
    key_s = key[order]
    starts = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    ends = np.r_[starts[1:], len(key_s)]
    lo = np.floor(cen.min(0) / chunk_m).astype(np.int64)
    out = {}
    for s, e in zip(starts, ends):
        f = faces[order[s:e]]
        used, inv = np.unique(f, return_inverse=True)
        c = None if colors is None else (np.clip(colors[used], 0, 1) * 255 + 0.5).astype(np.uint8)
        k = tuple(int(x) for x in idx[order[s]] + lo)
        out[k] = (verts[used].astype(np.float32), inv.reshape(-1, 3).astype(np.uint32), c)
    return out


def digest(part) -> bytes:
    v, f, c = part
    h = hashlib.blake2b(digest_size=16)
    h.update(v[f].tobytes())  # geometry in face order: independent of vertex numbering
    if c is not None:
        h.update(c[f].tobytes())
    return h.digest()


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float32."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v, dtype=np.float64)
    for k in range(3):
        for a in range(3):
            n[:, a] += np.bincount(f[:, k], weights=fn[:, a], minlength=len(v))
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class MeshChunks:
    """The mesh's chunk handles under ``/mesh`` on a viser server (see the module doc)."""

    def __init__(self, server, chunk_m: float = 1.28, root: str = "/mesh") -> None:
        if not chunk_m > 0:
            raise ValueError(f"chunk_m must be positive, got {chunk_m}")
        self.server, self.chunk_m, self.root = server, float(chunk_m), root
        self._digests: dict[tuple, bytes] = {}
        self._handles: dict[tuple, object] = {}
        self.visible = True

    def name(self, key: tuple) -> str:
        return f"{self.root}/c_{key[0]}_{key[1]}_{key[2]}".replace("-", "m")

    def update(self, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> ChunkUpdate:
        """Show this mesh (map frame): resend the chunks that changed, remove the ones that emptied."""
        t0 = time.perf_counter()
        parts = split_chunks(np.asarray(verts, np.float64), np.asarray(faces, np.int64), colors, self.chunk_m)
        u = ChunkUpdate(triangles=int(len(faces)))
        for key in [k for k in self._handles if k not in parts]:
            self._handles.pop(key).remove()
            self._digests.pop(key, None)
            u.removed += 1
        for key, part in parts.items():
            d = digest(part)
            if self._digests.get(key) == d:
                continue
            self._handles[key], nbytes = self._add(key, part)
            self._digests[key] = d
            u.bytes_sent += nbytes
            u.sent += 1
            u.triangles_sent += len(part[1])
        u.chunks = len(self._handles)
        u.seconds = time.perf_counter() - t0
        return u

    def _add(self, key: tuple, part):
        """(handle, bytes sent) of one chunk."""
        v, f, c = part
        if c is None:
            return self.server.scene.add_mesh_simple(self.name(key), v, f, color=(200, 200, 200), side="double",
                                                     visible=self.visible), v.nbytes + f.nbytes
        from neural_mapping.viewer.glb import mesh_glb

        glb = mesh_glb(v, f, c, vertex_normals(v, f))
        return self.server.scene.add_glb(self.name(key), glb, visible=self.visible), len(glb)

    def set_visible(self, visible: bool) -> None:
        self.visible = bool(visible)
        for h in self._handles.values():
            h.visible = self.visible

    def clear(self) -> None:
        for h in self._handles.values():
            h.remove()
        self._handles.clear()
        self._digests.clear()
