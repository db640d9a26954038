"""Observation coverage: which voxels of the map frame some frame has observed.

A voxel is *observed-free* when a depth ray passed through it before reaching its
measured surface, and *observed-surface* when it holds a depth point. Everything
else is unknown. The products (mesh, occupancy, ESDF) use this so that space no
frame has seen stays unknown instead of being filled by the field's extrapolation.

Storage is block-sparse: cubic blocks of ``BLOCK``^3 voxels (one byte of bit flags per
voxel) are allocated only where something was observed, in a pool indexed by a dict from
the block's packed index, so two observed regions 100 km apart cost two small block sets,
never their bounding box. Voxel ``i`` (integer, per axis) spans ``[i * voxel_m, (i + 1) *
voxel_m)``; block ``b`` holds voxels ``[b * BLOCK, (b + 1) * BLOCK)``. Block indices are kept
within ``[-2^20, 2^20)`` per axis (points beyond are ignored). Per cube of ``STAMP_BLOCK``^3
voxels the update counter when it was last touched is kept, so consumers (incremental
meshing) can ask which region changed since they last looked. Maps saved with the former
dense volume (``origin`` + ``state``) load by migration into blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from neural_mapping.frame import Frame
from neural_mapping.voxel_mask import VoxelMask

FREE = np.uint8(1)
SURFACE = np.uint8(2)
#: voxels per block edge (the unit of allocation)
BLOCK = 16
#: change stamps are kept per cubic block of this many voxels (BLOCK is a multiple of it)
STAMP_BLOCK = 8
_SPB = BLOCK // STAMP_BLOCK  # stamp cells per block edge
_KEY_BITS = 21
_KEY_OFF = 1 << (_KEY_BITS - 1)
_SHIFT = BLOCK.bit_length() - 1  # voxel index >> _SHIFT = block index
#: voxels of the dense scratch volume a frame may be marked in before its blocks (64 MB)
_SCRATCH_MAX = 1 << 26


def _pack(b: np.ndarray) -> np.ndarray:
    """int64 keys of block indices (N, 3), each in [-2^20, 2^20)."""
    i = b + _KEY_OFF
    return (i[:, 0] << (2 * _KEY_BITS)) | (i[:, 1] << _KEY_BITS) | i[:, 2]


def _unpack(key: np.ndarray) -> np.ndarray:
    m = (1 << _KEY_BITS) - 1
    return np.stack([(key >> (2 * _KEY_BITS)) & m, (key >> _KEY_BITS) & m, key & m], 1) - _KEY_OFF


def _in_key_range(b: np.ndarray) -> np.ndarray:
    return np.all((b >= -_KEY_OFF) & (b < _KEY_OFF), axis=1)


class Coverage:
    """Block-sparse record of observed space in the map frame (see module doc)."""

    def __init__(self, voxel_m: float = 0.1) -> None:
        if not (voxel_m > 0 and np.isfinite(voxel_m)):
            raise ValueError(f"Coverage voxel_m must be positive, got {voxel_m}")
        self.voxel_m = float(voxel_m)
        self._clear()
        self.n_updates = 0

    def _clear(self) -> None:
        self._slot: dict[int, int] = {}  # packed block index -> slot in the pools
        self._keys = np.zeros((0, 3), np.int64)  # (capacity, 3) block index of each slot
        self._pool = np.zeros((0, BLOCK, BLOCK, BLOCK), np.uint8)  # bit flags FREE|SURFACE
        self._stamps = np.zeros((0, _SPB, _SPB, _SPB), np.uint32)  # update count when last touched
        self._n = 0  # slots in use
        self._bounds_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._bounds_valid = True

    # ------------------------------------------------------------------ storage

    @property
    def n_blocks(self) -> int:
        """Blocks allocated (each ``BLOCK``^3 voxels)."""
        return self._n

    @property
    def allocated_cells(self) -> int:
        """Voxels held in allocated blocks (what the record costs, one byte each)."""
        return self._n * BLOCK ** 3

    def block_indices(self) -> np.ndarray:
        """(n_blocks, 3) int64 indices of the allocated blocks (a copy)."""
        return self._keys[:self._n].copy()

    def voxel_index(self, pts_W: np.ndarray) -> np.ndarray:
        """(N, 3) int64 voxel indices of points (N, 3) in the map frame."""
        return np.floor(np.asarray(pts_W, dtype=np.float64) / self.voxel_m).astype(np.int64)

    def _reserve(self, n_more: int) -> None:
        need = self._n + n_more
        cap = len(self._pool)
        if need <= cap:
            return
        cap = max(need, 2 * cap, 16)
        for name, shape, dt in (("_pool", (BLOCK,) * 3, np.uint8), ("_stamps", (_SPB,) * 3, np.uint32),
                                ("_keys", (3,), np.int64)):
            new = np.zeros((cap,) + shape, dt)
            new[:self._n] = getattr(self, name)[:self._n]
            setattr(self, name, new)

    def _slots(self, bidx: np.ndarray, create: bool, box=None) -> np.ndarray:
        """(N,) pool slot of each block index (N, 3) in key range; -1 where not allocated
        (``create``: allocate the missing blocks; ``box``: (lo, hi) of bidx when known)."""
        if len(bidx) == 0:
            return np.zeros(0, np.int64)
        lo, hi = box if box is not None else (bidx.min(0), bidx.max(0))
        span = hi - lo + 1
        if np.prod(span.astype(np.float64)) <= (1 << 22):  # small box: unique blocks without a sort
            flat = np.ravel_multi_index(tuple((bidx - lo).T), tuple(span))
            seen = np.zeros(int(np.prod(span)), bool)
            seen[flat] = True
            u = np.flatnonzero(seen)
            ub = np.stack(np.unravel_index(u, tuple(span)), 1) + lo
            ukeys = _pack(ub)
        else:
            ukeys, inv = np.unique(_pack(bidx), return_inverse=True)
            ub = None
        us = np.array([self._slot.get(k, -1) for k in ukeys.tolist()], np.int64)
        miss = np.flatnonzero(us < 0)
        if create and len(miss):
            self._reserve(len(miss))
            new = np.arange(self._n, self._n + len(miss))
            us[miss] = new
            self._keys[new] = ub[miss] if ub is not None else _unpack(ukeys[miss])
            self._slot.update(zip(ukeys[miss].tolist(), new.tolist()))
            self._n += len(miss)
        if ub is None:
            return us[inv.reshape(-1)]
        lut = np.full(len(seen), -1, np.int64)
        lut[u] = us
        return lut[flat]

    def _locate(self, idx: np.ndarray, create: bool, box=None) -> tuple[np.ndarray, np.ndarray]:
        """(slots (N,), flat voxel offsets into the pool (N,)) of voxel indices idx (N, 3);
        slot -1 for voxels whose block is not allocated or out of key range. ``box``: (lo, hi)
        voxel indices bounding idx, when known (saves passes over idx)."""
        b = idx >> _SHIFT
        bbox = None if box is None else (box[0] >> _SHIFT, box[1] >> _SHIFT)
        if bbox is not None and _in_key_range(np.stack(bbox)).all():
            slots = self._slots(b, create, bbox)
        else:
            ok = _in_key_range(b)
            slots = np.full(len(idx), -1, np.int64)
            if ok.all():
                slots = self._slots(b, create)
            elif ok.any():
                slots[ok] = self._slots(b[ok], create)
        loc = idx & (BLOCK - 1)
        flat = np.maximum(slots, 0) * BLOCK ** 3 + (loc[:, 0] * BLOCK + loc[:, 1]) * BLOCK + loc[:, 2]
        return slots, flat

    def _mark(self, idx: np.ndarray, flag: np.uint8, box=None) -> None:
        """OR ``flag`` into voxels idx (N, 3) int64 (allocating their blocks) and stamp them."""
        if len(idx) == 0:
            return
        slots, flat = self._locate(idx, create=True, box=box)
        if box is None:
            ok = slots >= 0
            slots, flat, idx = slots[ok], flat[ok], idx[ok]
        self._pool.reshape(-1)[flat] |= flag  # duplicates in flat all write the same value
        s = (idx & (BLOCK - 1)) >> (STAMP_BLOCK.bit_length() - 1)
        self._stamps.reshape(-1)[(slots * _SPB + s[:, 0]) * _SPB ** 2 + s[:, 1] * _SPB + s[:, 2]] = self.n_updates

    # ------------------------------------------------------------------ public API

    def update(self, frame: Frame, max_depth_m: float, stride: int = 4) -> None:
        """Mark the voxels traversed by the frame's depth rays (every ``stride``-th pixel).

        Voxels along a ray from the camera centre up to half a voxel before the
        measured point are observed-free; the voxel holding the point is
        observed-surface. Depth beyond ``max_depth_m`` marks free space up to
        ``max_depth_m`` and no surface (the measurement says nothing is nearer);
        depth 0 (invalid) marks nothing.
        """
        stride = max(1, int(stride))
        d = frame.depth_m[::stride, ::stride]  # (h, w) metres, 0 = invalid
        v, u = np.nonzero(d > 0)
        if len(v) == 0:
            return
        z = d[v, u].astype(np.float64)
        K = frame.K
        dirs_C = np.stack([(u * stride - K[0, 2]) / K[0, 0], (v * stride - K[1, 2]) / K[1, 1], np.ones_like(z)], 1)
        R = frame.T_WC[:3, :3]
        o_W = frame.T_WC[:3, 3]  # (3,)
        dirs_W = dirs_C @ R.T  # (R, 3), z-scaled: o + z * dir is the point at depth z
        hit = z <= max_depth_m
        z_end = np.minimum(z, max_depth_m)
        pts_W = o_W + dirs_W * z_end[:, None]  # (R, 3) end points
        ray_len = z_end * np.linalg.norm(dirs_W, axis=1)  # (R,) metres
        unit_W = dirs_W / np.linalg.norm(dirs_W, axis=1, keepdims=True)

        self.n_updates += 1
        step = 0.7 * self.voxel_m  # < one voxel: a ray crossing a voxel face-on always samples it
        free_len = np.where(hit, ray_len - 0.5 * self.voxel_m, ray_len)  # stop short of the surface voxel
        n_k = np.maximum(np.floor(free_len / step).astype(np.int64) + 1, 0)
        n_k[free_len < 0] = 0
        surf_idx = self.voxel_index(pts_W[hit])
        # the camera centre and every ray end point bound what this frame touches
        end_idx = self.voxel_index(np.vstack([o_W[None], pts_W]))
        e_lo, e_hi = end_idx.min(0), end_idx.max(0)

        # free space, in chunks of rays to bound memory (~4 M samples at a time); float32 sample
        # positions in voxel units relative to the camera's voxel (precise far from the origin)
        o_vox = np.floor(o_W / self.voxel_m).astype(np.int64)
        o_loc = (o_W / self.voxel_m - o_vox).astype(np.float32)  # (3,) in [0, 1)
        u_loc = (unit_W / self.voxel_m).astype(np.float32)  # (R, 3) voxels per metre of ray
        # a frame's box (block-aligned) small enough is marked densely first, then merged into
        # its blocks (3x faster than locating every sample's block); else samples go to blocks
        b_lo, b_hi = e_lo >> _SHIFT, e_hi >> _SHIFT
        nb = b_hi - b_lo + 1
        scratch = None
        if float(np.prod(nb.astype(np.float64))) * BLOCK ** 3 <= _SCRATCH_MAX and _in_key_range(np.stack([b_lo, b_hi])).all():
            scratch = np.zeros(tuple(int(n) * BLOCK for n in nb), np.uint8)
            s_org, (_, SY, SZ) = b_lo * BLOCK, scratch.shape
            flat_scratch = scratch.reshape(-1)
        chunk_samples = 1 << 22
        start = 0
        csum = np.cumsum(n_k)
        while start < len(n_k):
            base = csum[start - 1] if start else 0
            stop = int(np.searchsorted(csum, base + chunk_samples, side="right"))
            stop = max(stop, start + 1)
            nk = n_k[start:stop]
            m = int(nk.sum())
            if m:
                ray = np.repeat(np.arange(start, stop), nk)  # (m,)
                first = np.repeat(np.cumsum(nk) - nk, nk)
                s_m = ((np.arange(m) - first) * step).astype(np.float32)  # (m,) metres from the camera
                li = np.floor(o_loc + u_loc[ray] * s_m[:, None]).astype(np.int64) + o_vox  # (m, 3) voxels
                np.clip(li, e_lo, e_hi, out=li)  # float rounding past the frame's end points
                if scratch is None:
                    self._mark(li, FREE, (e_lo, e_hi))
                else:
                    li -= s_org
                    flat_scratch[(li[:, 0] * SY + li[:, 1]) * SZ + li[:, 2]] = FREE
            start = stop
        if scratch is None:
            self._mark(surf_idx, SURFACE)
        else:
            li = surf_idx - s_org
            flat_scratch[(li[:, 0] * SY + li[:, 1]) * SZ + li[:, 2]] |= SURFACE
            self._merge(scratch, b_lo)
        self._bounds_valid = False

    def _merge(self, scratch: np.ndarray, b_lo: np.ndarray) -> None:
        """OR a dense block-aligned volume (whose first block is ``b_lo``) into the blocks it
        touches (allocating them) and stamp its touched cubes."""
        nb = [n // BLOCK for n in scratch.shape]
        v6 = scratch.reshape(nb[0], BLOCK, nb[1], BLOCK, nb[2], BLOCK)
        w = BLOCK // 8  # reduce 8 voxels at a time: the volume seen as uint64 along z
        w6 = scratch.view(np.uint64).reshape(nb[0], BLOCK, nb[1], BLOCK, nb[2], w)
        touched = np.argwhere(w6.any(axis=(1, 3, 5)))  # (n, 3) blocks with an observed voxel
        if len(touched) == 0:
            return
        slots = self._slots(touched + b_lo, create=True)  # distinct blocks: distinct slots
        cubes = v6[touched[:, 0], :, touched[:, 1], :, touched[:, 2], :]  # (n, B, B, B)
        self._pool[slots] |= cubes
        S = STAMP_BLOCK  # 8 voxels: one uint64 along z
        hit = cubes.view(np.uint64).reshape(len(slots), _SPB, S, _SPB, S, _SPB).any(axis=(2, 4))  # (n, 2, 2, 2)
        st = self._stamps[slots]
        st[hit] = self.n_updates
        self._stamps[slots] = st

    def observed(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) bool: whether each point (N, 3) lies in an observed (free or surface) voxel."""
        return self.state_at(pts_W) != 0

    def state_at(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) uint8 flags (0 unknown, |1 free, |2 surface) of the voxels holding points (N, 3)."""
        pts_W = np.asarray(pts_W)
        if pts_W.ndim != 2 or pts_W.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got shape {pts_W.shape}")
        out = np.zeros(len(pts_W), dtype=np.uint8)
        if self._n == 0 or len(pts_W) == 0:
            return out
        pool = self._pool.reshape(-1)
        chunk = 1 << 20
        for a in range(0, len(pts_W), chunk):
            p = np.asarray(pts_W[a:a + chunk], dtype=np.float64)
            fin = np.all(np.abs(p) < self.voxel_m * 2.0 ** 40, axis=1)  # False for NaN; no int overflow
            idx = self.voxel_index(np.where(fin[:, None], p, 0.0))
            slots, flat = self._locate(idx, create=False)
            ok = fin & (slots >= 0)
            out[a:a + chunk][ok] = pool[flat[ok]]
        return out

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(min corner (3,), max corner (3,)) in metres of all observed voxels, or None."""
        if not self._bounds_valid:
            self._bounds_cache = self._compute_bounds()
            self._bounds_valid = True
        if self._bounds_cache is None:
            return None
        return self._bounds_cache[0].copy(), self._bounds_cache[1].copy()

    def _compute_bounds(self):
        if self._n == 0:
            return None
        occ = self._pool[:self._n] != 0  # (n, B, B, B)
        keys = self._keys[:self._n]
        lo_i, hi_i = np.zeros(3, np.int64), np.zeros(3, np.int64)
        for ax in range(3):
            other = tuple(a for a in (1, 2, 3) if a != ax + 1)
            prof = occ.any(axis=other)  # (n, B) per block: which voxel layers along ax are observed
            has = prof.any(1)
            if not has.any():
                return None
            first = np.argmax(prof, 1)
            last = BLOCK - 1 - np.argmax(prof[:, ::-1], 1)
            base = keys[:, ax] * BLOCK
            lo_i[ax] = (base + first)[has].min()
            hi_i[ax] = (base + last)[has].max() + 1
        return lo_i * self.voxel_m, hi_i * self.voxel_m

    def _dense(self, cells: np.ndarray, idx: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(origin (3,), dense bool volume) of per-block cubes ``cells`` (n, size, size, size) at
        block indices idx (n, 3): the bounding box of the given blocks only."""
        if len(idx) == 0:
            return np.zeros(3, np.int64), np.zeros((0, 0, 0), bool)
        lo = idx.min(0)
        nb = idx.max(0) - lo + 1
        vol = np.zeros((nb[0], size, nb[1], size, nb[2], size), bool)
        r = idx - lo
        vol[r[:, 0], :, r[:, 1], :, r[:, 2], :] = cells
        return lo * size, vol.reshape(nb[0] * size, nb[1] * size, nb[2] * size)

    def changed_since(self, n_updates: int) -> "VoxelMask":
        """Blocks of 8^3 voxels touched by updates numbered > ``n_updates`` (a mask whose cells
        are the blocks, over the box of the changed ones; compare ``n_updates`` with ``self.n_updates``)."""
        st = self._stamps[:self._n] > n_updates
        sel = st.reshape(self._n, -1).any(1)
        origin, mask = self._dense(st[sel], self._keys[:self._n][sel], _SPB)
        return VoxelMask(self.voxel_m * STAMP_BLOCK, origin, mask)

    def observed_mask(self) -> "VoxelMask":
        """The observed voxels as a dense mask over the box of the allocated blocks, with its origin."""
        origin, mask = self._dense(self._pool[:self._n] != 0, self._keys[:self._n], BLOCK)
        return VoxelMask(self.voxel_m, origin, mask)

    def surface_mask(self) -> "VoxelMask":
        """The observed-surface voxels (those holding a depth point) as a dense mask with its
        origin (same origin and shape as :meth:`observed_mask`)."""
        origin, mask = self._dense((self._pool[:self._n] & SURFACE) != 0, self._keys[:self._n], BLOCK)
        return VoxelMask(self.voxel_m, origin, mask)

    @property
    def n_observed(self) -> int:
        return int(np.count_nonzero(self._pool[:self._n]))

    @property
    def n_surface(self) -> int:
        """Observed-surface voxels (those holding a depth point)."""
        return int(np.count_nonzero(self._pool[:self._n] & SURFACE))

    def state_dict(self) -> dict:
        """Everything to restore the record; tensors only (safe for torch.load(weights_only=True))."""
        return {
            "voxel_m": float(self.voxel_m),
            "block": BLOCK,
            "block_index": torch.from_numpy(self._keys[:self._n].copy()),
            "blocks": torch.from_numpy(self._pool[:self._n].copy()),
            "n_updates": int(self.n_updates),
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`'s record, or migrate the former dense one (``origin``, ``state``)."""
        def arr(x, dt):
            return np.asarray(x.numpy() if torch.is_tensor(x) else x, dtype=dt)

        if "state" in d:  # the dense volume of maps saved before the block-sparse record
            state, origin = arr(d["state"], np.uint8), arr(d["origin"], np.int64)
            if state.ndim != 3 or origin.shape != (3,):
                raise ValueError(f"coverage state must be 3-D with a (3,) origin, got {state.shape} and {origin.shape}")
            idx = np.argwhere(state != 0) + origin
            vals = state[state != 0]
        else:
            blocks, bidx = arr(d["blocks"], np.uint8), arr(d["block_index"], np.int64)
            if int(d.get("block", BLOCK)) != BLOCK or blocks.shape[1:] != (BLOCK,) * 3 or bidx.shape != (len(blocks), 3):
                raise ValueError(f"coverage blocks must be (M, {BLOCK}, {BLOCK}, {BLOCK}) with (M, 3) indices, "
                                 f"got {blocks.shape} and {bidx.shape}")
            loc = np.argwhere(blocks != 0)  # (K, 4): block, x, y, z
            idx = bidx[loc[:, 0]] * BLOCK + loc[:, 1:]
            vals = blocks[blocks != 0]
        self.voxel_m = float(d["voxel_m"])
        self._clear()
        self.n_updates = int(d.get("n_updates", 0))
        # everything restored counts as touched by the latest update
        for flag in (FREE, SURFACE):
            self._mark(idx[(vals & flag) != 0], flag)
        self._bounds_valid = False
