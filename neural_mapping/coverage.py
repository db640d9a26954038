"""Observation coverage: which voxels of the map frame some frame has observed.

A voxel is *observed-free* when a depth ray passed through it before reaching its
measured surface, and *observed-surface* when it holds a depth point. Everything
else is unknown. The products (mesh, occupancy, ESDF) use this so that space no
frame has seen stays unknown instead of being filled by the field's extrapolation.

Storage is a dense ``uint8`` volume of bit flags with an integer origin that grows
(in blocks of ``GROW`` voxels) to cover whatever is observed; the map frame is
never given a bounding box. Voxel ``i`` (integer, per axis) spans
``[i * voxel_m, (i + 1) * voxel_m)`` (one byte per voxel). A second, coarse volume
records per block of 8^3 voxels the update counter when the block was last touched,
so consumers (incremental meshing) can ask which region changed since they last looked.
"""

from __future__ import annotations

import numpy as np
import torch

from neural_mapping.frame import Frame

FREE = np.uint8(1)
SURFACE = np.uint8(2)
#: the volume grows by whole blocks of this many voxels per axis (amortises copies).
GROW = 16
#: change stamps are kept per cubic block of this many voxels (GROW is a multiple of it)
STAMP_BLOCK = 8


class Coverage:
    """Sparse record of observed space in the map frame (see module doc)."""

    def __init__(self, voxel_m: float = 0.1) -> None:
        if not (voxel_m > 0 and np.isfinite(voxel_m)):
            raise ValueError(f"Coverage voxel_m must be positive, got {voxel_m}")
        self.voxel_m = float(voxel_m)
        self._origin = np.zeros(3, dtype=np.int64)  # voxel index of _state[0, 0, 0]
        self._state = np.zeros((0, 0, 0), dtype=np.uint8)  # (X, Y, Z) bit flags FREE|SURFACE
        # (X/8, Y/8, Z/8) update count when a voxel of the block was last touched
        self._stamp = np.zeros((0, 0, 0), dtype=np.uint32)
        self.n_updates = 0
        self._bounds_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._bounds_valid = True

    # ------------------------------------------------------------------ geometry helpers

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self._state.shape)  # type: ignore[return-value]

    @property
    def origin_index(self) -> np.ndarray:
        """(3,) int64 voxel index of the volume's first voxel."""
        return self._origin.copy()

    def voxel_index(self, pts_W: np.ndarray) -> np.ndarray:
        """(N, 3) int64 voxel indices of points (N, 3) in the map frame."""
        return np.floor(np.asarray(pts_W, dtype=np.float64) / self.voxel_m).astype(np.int64)

    def _grow(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Make the volume cover voxel indices lo..hi (inclusive, (3,) each)."""
        cur_lo = self._origin
        cur_hi = self._origin + np.array(self._state.shape, dtype=np.int64) - 1
        if self._state.size and np.all(lo >= cur_lo) and np.all(hi <= cur_hi):
            return
        if self._state.size:
            new_lo = np.minimum(lo, cur_lo)
            new_hi = np.maximum(hi, cur_hi)
        else:
            new_lo, new_hi = lo.copy(), hi.copy()
        # pad to whole blocks so repeated small growth does not copy every time
        new_lo = (np.floor_divide(new_lo, GROW)) * GROW
        new_hi = (np.floor_divide(new_hi, GROW) + 1) * GROW - 1
        shape = tuple(int(s) for s in (new_hi - new_lo + 1))
        state = np.zeros(shape, dtype=np.uint8)
        stamp = np.zeros(tuple(n // STAMP_BLOCK for n in shape), dtype=np.uint32)
        if self._state.size:
            o = self._origin - new_lo
            sx, sy, sz = self._state.shape
            state[o[0]:o[0] + sx, o[1]:o[1] + sy, o[2]:o[2] + sz] = self._state
            ob = o // STAMP_BLOCK
            bx, by, bz = self._stamp.shape
            stamp[ob[0]:ob[0] + bx, ob[1]:ob[1] + by, ob[2]:ob[2] + bz] = self._stamp
        self._state, self._stamp, self._origin = state, stamp, new_lo

    def _mark(self, idx: np.ndarray, flag: np.uint8) -> None:
        """OR ``flag`` into voxels idx (N, 3) int64 (volume already grown to cover them)."""
        if len(idx) == 0:
            return
        local = idx - self._origin
        flat = np.ravel_multi_index((local[:, 0], local[:, 1], local[:, 2]), self._state.shape)
        st = self._state.reshape(-1)  # a view; duplicates in flat all write the same value
        st[flat] |= flag
        lb = local // STAMP_BLOCK
        self._stamp[lb[:, 0], lb[:, 1], lb[:, 2]] = self.n_updates

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
        self._grow(end_idx.min(0), end_idx.max(0))

        # free space, in chunks of rays to bound memory (~4 M samples at a time); float32 sample
        # positions in voxel units relative to the volume origin, flattened straight to indices
        o_loc = (o_W / self.voxel_m - self._origin).astype(np.float32)  # (3,)
        u_loc = (unit_W / self.voxel_m).astype(np.float32)  # (R, 3) voxels per metre of ray
        X, Y, Z = self._state.shape
        flat_state = self._state.reshape(-1)
        flat_stamp = self._stamp.reshape(-1)
        Yb, Zb = Y // STAMP_BLOCK, Z // STAMP_BLOCK
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
                li = np.floor(o_loc + u_loc[ray] * s_m[:, None]).astype(np.int64)  # (m, 3) local voxel
                np.clip(li, 0, [X - 1, Y - 1, Z - 1], out=li)  # float rounding at the volume's faces
                flat = (li[:, 0] * Y + li[:, 1]) * Z + li[:, 2]
                flat_state[flat] |= FREE
                li //= STAMP_BLOCK
                flat_stamp[(li[:, 0] * Yb + li[:, 1]) * Zb + li[:, 2]] = self.n_updates
            start = stop
        self._mark(surf_idx, SURFACE)
        self._bounds_valid = False

    def observed(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) bool: whether each point (N, 3) lies in an observed (free or surface) voxel."""
        return self.state_at(pts_W) != 0

    def state_at(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) uint8 flags (0 unknown, |1 free, |2 surface) of the voxels holding points (N, 3)."""
        pts_W = np.asarray(pts_W)
        if pts_W.ndim != 2 or pts_W.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got shape {pts_W.shape}")
        out = np.zeros(len(pts_W), dtype=np.uint8)
        if self._state.size == 0 or len(pts_W) == 0:
            return out
        shape = np.array(self._state.shape)
        chunk = 1 << 20
        for a in range(0, len(pts_W), chunk):
            local = self.voxel_index(pts_W[a:a + chunk]) - self._origin
            ok = np.all((local >= 0) & (local < shape), axis=1)
            li = local[ok]
            out[a:a + chunk][ok] = self._state[li[:, 0], li[:, 1], li[:, 2]]
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
        if self._state.size == 0:
            return None
        occ = self._state != 0
        rng = []
        for ax in range(3):
            other = tuple(a for a in range(3) if a != ax)
            nz = np.nonzero(occ.any(axis=other))[0]
            if len(nz) == 0:
                return None
            rng.append((nz[0], nz[-1]))
        lo_i = self._origin + np.array([r[0] for r in rng])
        hi_i = self._origin + np.array([r[1] for r in rng]) + 1
        return lo_i * self.voxel_m, hi_i * self.voxel_m

    def changed_since(self, n_updates: int) -> "VoxelMask":
        """Blocks of 8^3 voxels touched by updates numbered > ``n_updates`` (a mask whose cells
        are the blocks; compare ``n_updates`` with ``self.n_updates``)."""
        return VoxelMask(self.voxel_m * STAMP_BLOCK, self._origin // STAMP_BLOCK, self._stamp > n_updates)

    def observed_mask(self) -> "VoxelMask":
        """The observed voxels as a dense mask with its origin (a copy)."""
        return VoxelMask(self.voxel_m, self._origin.copy(), self._state != 0)

    def surface_mask(self) -> "VoxelMask":
        """The observed-surface voxels (those holding a depth point) as a dense mask with its
        origin (a copy; same origin and shape as :meth:`observed_mask`)."""
        return VoxelMask(self.voxel_m, self._origin.copy(), (self._state & SURFACE) != 0)

    @property
    def n_observed(self) -> int:
        return int(np.count_nonzero(self._state))

    def state_dict(self) -> dict:
        """Everything to restore the record; tensors only (safe for torch.load(weights_only=True))."""
        return {
            "voxel_m": float(self.voxel_m),
            "origin": torch.from_numpy(self._origin.copy()),
            "state": torch.from_numpy(self._state.copy()),
            "n_updates": int(self.n_updates),
        }

    def load_state_dict(self, d: dict) -> None:
        state = np.asarray(d["state"].numpy() if torch.is_tensor(d["state"]) else d["state"], dtype=np.uint8)
        origin = np.asarray(d["origin"].numpy() if torch.is_tensor(d["origin"]) else d["origin"], dtype=np.int64)
        if state.ndim != 3 or origin.shape != (3,):
            raise ValueError(f"coverage state must be 3-D with a (3,) origin, got {state.shape} and {origin.shape}")
        self.voxel_m = float(d["voxel_m"])
        self._state = state.copy()
        self._origin = origin.copy()
        self.n_updates = int(d.get("n_updates", 0))
        # everything restored counts as touched by the latest update
        X, Y, Z = (n // STAMP_BLOCK for n in self._state.shape)
        touched = (self._state != 0).reshape(X, STAMP_BLOCK, Y, STAMP_BLOCK, Z, STAMP_BLOCK).any(axis=(1, 3, 5))
        self._stamp = np.where(touched, np.uint32(self.n_updates), np.uint32(0)).astype(np.uint32)
        self._bounds_valid = False


class VoxelMask:
    """A dense boolean voxel volume with its origin (voxel index of mask[0, 0, 0])."""

    def __init__(self, voxel_m: float, origin: np.ndarray, mask: np.ndarray) -> None:
        self.voxel_m = voxel_m
        self.origin = origin  # (3,) int64
        self.mask = mask  # (X, Y, Z) bool

    def contains(self, pts_W: np.ndarray) -> np.ndarray:
        """(N,) bool for points (N, 3)."""
        out = np.zeros(len(pts_W), dtype=bool)
        if self.mask.size == 0:
            return out
        local = np.floor(np.asarray(pts_W, dtype=np.float64) / self.voxel_m).astype(np.int64) - self.origin
        ok = np.all((local >= 0) & (local < np.array(self.mask.shape)), axis=1)
        li = local[ok]
        out[ok] = self.mask[li[:, 0], li[:, 1], li[:, 2]]
        return out

    def any(self) -> bool:
        return bool(self.mask.any())
