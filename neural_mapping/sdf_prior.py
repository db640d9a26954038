"""A coarse TSDF fused from every frame: the classical prior under the neural SDF (H2-Mapping style).

H2-Mapping (Jiang et al., RA-L 2023) keeps an octree SDF prior fused from every frame and lets a
hash-grid field learn only the residual and the detail, which is how it maps in real time on a
Jetson. Here the prior is a projective TSDF at ``prior.voxel_m`` (4 cm by default) in sparse
blocks of 8^3 voxels, fused from every frame that reaches the map (a few ms at 320x240 on 2 cores,
against the hundreds of rays per frame a training step can afford), and the field is

    sdf(x) = h(x) + q(x),     q(x) = trilinear interpolation of  t_v = c_v (D_v - h0)

with ``h`` the network's output (which starts at ``h0 = train.truncation_m`` everywhere,
:class:`~neural_mapping.fields.SdfField`), ``D_v`` the fused TSDF at voxel ``v`` (truncated to
[-T, T], ``T = prior.trunc_voxels * voxel_m``), and ``c_v = min(1, W_v / prior.full_weight)`` its
confidence from the fusion weight. Where the prior is confident the untrained field is the TSDF
(``h = h0``); where nothing was fused
``q = 0`` and the field is the network alone, as without a prior (it still completes holes and
answers beyond the band). ``q`` is differentiable in ``x`` (its gradient is the trilinear one), so
training, eikonal terms, normals and the fast query path see one field. The map stays a neural
field: every product is computed from ``sdf(x)``.

Storage: ``keys`` (n,) int64 block coordinates packed into one integer, ``tsdf`` and ``weight``
(n, 512) float32 (stored as float16 in a map file, :mod:`neural_mapping.mapfile`), and a dense
int32 index of block slots over the blocks' bounding box (rebuilt from ``keys``; a room is ~10^4
entries, a 40 x 20 m floor ~10^5; :mod:`neural_mapping.region` bounds the extent).

Axes and names follow :mod:`neural_mapping.camera`: OpenCV camera axes, ``T_WC`` camera to world.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

B = 8  # voxels per block side
_OFF = 1 << 20  # block coordinate offset for packing (+-2^20 blocks: +-335 km at 4 cm)
_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.int64)


def pack(b: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 block coordinates -> (N,) int64 keys (order: x, then y, then z)."""
    b = b + _OFF
    return (b[:, 0] << 42) | (b[:, 1] << 21) | b[:, 2]


def unpack(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack`."""
    m = (1 << 21) - 1
    return torch.stack([(k >> 42) & m, (k >> 21) & m, k & m], dim=1) - _OFF


class SdfPrior(nn.Module):
    """Sparse-block projective TSDF; :meth:`integrate` a frame, :meth:`forward` q(x) (differentiable)."""

    def __init__(self, voxel_m: float = 0.04, trunc_voxels: float = 3.0, full_weight: float = 1.0,
                 max_weight: float = 64.0, stride: int = 2, max_depth_m: float = 6.0, min_depth_m: float = 0.1,
                 offset_m: float = 0.1, behind_voxels: float = 8.0):
        super().__init__()
        self.voxel_m = float(voxel_m)
        self.trunc_m = float(trunc_voxels) * self.voxel_m
        self.offset_m = float(offset_m)  # the network's initial output: t = c (D - offset)
        self.behind_m = float(behind_voxels) * self.voxel_m
        self.free_ray_stride = 16  # of the fused rays, every 16th carves free space (a few ms a frame)
        self.full_weight = float(full_weight)
        self.max_weight = float(max_weight)
        self.stride = int(stride)
        self.max_depth_m, self.min_depth_m = float(max_depth_m), float(min_depth_m)
        self.register_buffer("keys", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("tsdf", torch.zeros(0, B ** 3))
        self.register_buffer("weight", torch.zeros(0, B ** 3))
        self.register_buffer("inside", torch.zeros(0, B ** 3))  # count of "behind the band" evidence
        # derived, not saved: t_v per voxel and the dense block index
        self.register_buffer("t", torch.zeros(0, B ** 3), persistent=False)
        self.register_buffer("index", torch.full((1, 1, 1), -1, dtype=torch.int32), persistent=False)
        self.index_lo = torch.zeros(3, dtype=torch.int64)
        self.frames = 0

    @classmethod
    def from_config(cls, cfg) -> "SdfPrior":
        p, r = cfg.prior, cfg.render
        return cls(p.voxel_m, p.trunc_voxels, p.full_weight, p.max_weight, p.stride, r.max_depth_m, r.min_depth_m,
                   offset_m=cfg.train.truncation_m, behind_voxels=p.behind_voxels)

    @property
    def n_blocks(self) -> int:
        return int(self.keys.shape[0])

    def memory_mb(self) -> float:
        return sum(b.numel() * b.element_size() for b in (self.keys, self.tsdf, self.weight, self.inside, self.t, self.index)) / 2 ** 20

    # ------------------------------------------------------------------ fusion

    @torch.no_grad()
    def integrate(self, depth_m: np.ndarray, K: np.ndarray, T_WC: np.ndarray) -> int:
        """Fuse one depth image (H, W) in m; returns the number of voxels updated."""
        dev = self.tsdf.device
        s = self.stride
        d = torch.as_tensor(np.ascontiguousarray(depth_m[::s, ::s]), dtype=torch.float32, device=dev)
        vs, us = torch.nonzero((d > self.min_depth_m) & (d < self.max_depth_m) & torch.isfinite(d), as_tuple=True)
        if vs.numel() == 0:
            return 0
        z = d[vs, us]
        Kt = torch.as_tensor(K, dtype=torch.float32, device=dev)
        x = ((us.float() * s) - Kt[0, 2]) / Kt[0, 0]
        y = ((vs.float() * s) - Kt[1, 2]) / Kt[1, 1]
        dirs = torch.stack([x, y, torch.ones_like(x)], dim=1)  # (R, 3), z = 1: points are dirs * depth
        n = int(math.ceil(self.trunc_m / self.voxel_m))
        nb = int(math.ceil(self.behind_m / self.voxel_m))
        ks = torch.arange(-n, nb + 1, device=dev, dtype=torch.float32) * self.voxel_m
        zs = z[:, None] + ks[None, :]  # (R, n + nb + 1) sample depths around and behind the surface
        pts_C = dirs[:, None, :] * zs[..., None]
        T = torch.as_tensor(T_WC, dtype=torch.float32, device=dev)
        pts_W = pts_C.reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
        # candidate voxel nodes: those next to the samples; then each node's projective SDF as TSDF
        # fusion defines it (Curless & Levoy; Open3D, voxblox): the depth at the pixel the node
        # projects to, minus the node's depth
        uk = torch.unique(pack(torch.round(pts_W / self.voxel_m).to(torch.int64)))
        nodes = unpack(uk)
        node_C = (nodes.to(torch.float32) * self.voxel_m - T[:3, 3]) @ T[:3, :3]
        zc = node_C[:, 2]
        zs_ = zc.clamp(min=1e-6)
        H, W = depth_m.shape
        pu = torch.round(node_C[:, 0] / zs_ * Kt[0, 0] + Kt[0, 2]).to(torch.int64)
        pv = torch.round(node_C[:, 1] / zs_ * Kt[1, 1] + Kt[1, 2]).to(torch.int64)
        inside = (zc > 0) & (pu >= 0) & (pu < W) & (pv >= 0) & (pv < H)
        full = torch.as_tensor(np.ascontiguousarray(depth_m), dtype=torch.float32, device=dev)
        dpix = full[pv.clamp(0, H - 1), pu.clamp(0, W - 1)]
        sdf = dpix - zc
        keep = inside & (dpix > self.min_depth_m) & (dpix < self.max_depth_m) & (sdf > -self.behind_m)
        uk, sdf = uk[keep], sdf[keep]
        if uk.numel() == 0:
            return 0
        # behind the band (down to behind_m) a voxel is only "probably inside": counted apart, and
        # used only where no view measured it (t = -T - h0 there), so that the field stays negative
        # behind surfaces instead of jumping back to the network's +h0 right behind the band (a
        # second, spurious sheet); measured voxels never mix with it (thin objects, floors behind
        # table edges keep their surfaces)
        deep = sdf < -self.trunc_m
        unodes = unpack(uk)
        blocks = torch.div(unodes, B, rounding_mode="floor")
        slot = self._slots(blocks)
        local = unodes - blocks * B
        flat = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
        sd, fd = slot[deep], flat[deep]
        wi = self.inside[sd, fd]
        self.inside[sd, fd] = torch.where(wi < 0, wi, torch.clamp(wi + 1.0, max=self.max_weight))
        sm, fm, obs = slot[~deep], flat[~deep], sdf[~deep].clamp(max=self.trunc_m)
        w0 = self.weight[sm, fm]
        self.tsdf[sm, fm] = (self.tsdf[sm, fm] * w0 + obs) / (w0 + 1.0)
        self.weight[sm, fm] = torch.clamp(w0 + 1.0, max=self.max_weight)
        self._carve_free(dirs[:: self.free_ray_stride], z[:: self.free_ray_stride], T)
        self._update_t(slot, flat)
        self.frames += 1
        return int(uk.numel())

    def _t_of(self, D: torch.Tensor, W: torch.Tensor, Wi: torch.Tensor) -> torch.Tensor:
        """t per voxel: c (D - h0) where measured; the inside value where only inside evidence; else 0.
        ``Wi`` < 0 marks voxels seen free (carved), which inside evidence never reaches."""
        meas = torch.clamp(W / self.full_weight, max=1.0) * (D - self.offset_m)
        ins = torch.clamp(Wi / self.full_weight, max=1.0) * (-self.trunc_m - self.offset_m)
        return torch.where(W > 0, meas, torch.where(Wi > 0, ins, torch.zeros_like(D)))

    @torch.no_grad()
    def _carve_free(self, dirs: torch.Tensor, z: torch.Tensor, T: torch.Tensor) -> None:
        """Voxels of allocated blocks crossed by rays in front of their band are seen free: their
        inside evidence is cleared for good (marked -1), so it cannot leak into observed free space."""
        if dirs.numel() == 0 or self.n_blocks == 0:
            return
        step = self.voxel_m
        n = int(math.ceil(float(z.max()) / step))
        ts = torch.arange(1, n + 1, device=dirs.device, dtype=torch.float32) * step
        front = ts[None, :] < (z[:, None] - self.trunc_m)  # (R, n) samples in front of the band
        r, k = torch.nonzero(front, as_tuple=True)
        pts_W = (dirs[r] * ts[k, None]) @ T[:3, :3].T + T[:3, 3]
        nodes = torch.round(pts_W / self.voxel_m).to(torch.int64)
        blocks = torch.div(nodes, B, rounding_mode="floor")
        slot = self._lookup(blocks)
        have = slot >= 0
        slot, nodes, blocks = slot[have], nodes[have], blocks[have]
        local = nodes - blocks * B
        flat = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
        self.inside[slot, flat] = -1.0
        self.t[slot, flat] = self._t_of(self.tsdf[slot, flat], self.weight[slot, flat], self.inside[slot, flat])

    def _update_t(self, slot: torch.Tensor, flat: torch.Tensor) -> None:
        self.t[slot, flat] = self._t_of(self.tsdf[slot, flat], self.weight[slot, flat], self.inside[slot, flat])

    def _slots(self, blocks: torch.Tensor) -> torch.Tensor:
        """Slot of each block (N, 3), allocating the missing ones."""
        slot = self._lookup(blocks)
        miss = slot < 0
        if bool(miss.any()):
            new = torch.unique(pack(blocks[miss]))
            self._append(new)
            slot = self._lookup(blocks)
        return slot

    def _append(self, new_keys: torch.Tensor) -> None:
        m = new_keys.numel()
        z = self.tsdf.new_zeros((m, B ** 3))
        self.keys = torch.cat([self.keys, new_keys])
        self.tsdf = torch.cat([self.tsdf, z])
        self.weight = torch.cat([self.weight, z])
        self.inside = torch.cat([self.inside, z])
        self.t = torch.cat([self.t, z])
        self._rebuild_index()

    def _rebuild_index(self) -> None:
        dev = self.keys.device
        if self.keys.numel() == 0:
            self.index = torch.full((1, 1, 1), -1, dtype=torch.int32, device=dev)
            self.index_lo = torch.zeros(3, dtype=torch.int64)
            return
        b = unpack(self.keys)
        lo, hi = b.min(0).values, b.max(0).values
        shape = (hi - lo + 1).tolist()
        idx = torch.full(shape, -1, dtype=torch.int32, device=dev)
        rel = b - lo
        idx[rel[:, 0], rel[:, 1], rel[:, 2]] = torch.arange(len(b), dtype=torch.int32, device=dev)
        self.index, self.index_lo = idx, lo.cpu()

    def _lookup(self, blocks: torch.Tensor) -> torch.Tensor:
        """(N,) int64 slot of each block (N, 3), -1 where not allocated."""
        rel = blocks - self.index_lo.to(blocks.device)
        shape = torch.tensor(self.index.shape, device=blocks.device)
        inside = ((rel >= 0) & (rel < shape)).all(dim=1)
        rel = torch.where(inside[:, None], rel, torch.zeros_like(rel))
        s = self.index[rel[:, 0], rel[:, 1], rel[:, 2]].to(torch.int64)
        return torch.where(inside, s, torch.full_like(s, -1))

    # ------------------------------------------------------------------ queries

    def _corner_values(self, i0: torch.Tensor) -> torch.Tensor:
        """t at the 8 corners (N, 8) of the cells whose lower node is i0 (N, 3); 0 where unfused."""
        nodes = i0[:, None, :] + _CORNERS.to(i0.device)[None]  # (N, 8, 3)
        nodes = nodes.reshape(-1, 3)
        blocks = torch.div(nodes, B, rounding_mode="floor")
        slot = self._lookup(blocks)
        local = nodes - blocks * B
        flat = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
        have = slot >= 0
        v = self.t[slot.clamp(min=0), flat] if self.n_blocks else torch.zeros_like(flat, dtype=torch.float32)
        return torch.where(have, v, torch.zeros_like(v)).reshape(-1, 8)

    @torch.no_grad()
    def support(self, pts_W: torch.Tensor) -> torch.Tensor:
        """(N,) fraction of the 8 prior voxels around each point that hold a value (measured, or
        inside evidence; 0: the network alone answers there, 1: the prior is defined at every corner)."""
        if self.n_blocks == 0:
            return pts_W.new_zeros(pts_W.shape[0])
        i0 = torch.floor(pts_W / self.voxel_m).to(torch.int64)
        nodes = (i0[:, None, :] + _CORNERS.to(i0.device)[None]).reshape(-1, 3)
        blocks = torch.div(nodes, B, rounding_mode="floor")
        slot = self._lookup(blocks)
        local = nodes - blocks * B
        flat = (local[:, 0] * B + local[:, 1]) * B + local[:, 2]
        sc = slot.clamp(min=0)
        known = (slot >= 0) & ((self.weight[sc, flat] > 0) | (self.inside[sc, flat] > 0))
        return known.reshape(-1, 8).to(pts_W.dtype).mean(dim=1)

    def consistent_faces(self, verts_W: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """The faces (F, 3) of a mesh of the field whose vertices all lie where the prior is wholly
        fused or wholly absent. Where fused voxels meet unfused ones (the back of the band, the
        rim of what was seen) ``q`` steps between the TSDF and 0 within a voxel: the zero set there
        is that step, not a surface (a TSDF's marching cubes skips such cells for the same reason)."""
        if len(faces) == 0 or self.n_blocks == 0:
            return faces
        sup = self.support(torch.as_tensor(np.asarray(verts_W, dtype=np.float32), device=self.t.device)).cpu().numpy()
        mixed = (sup > 0) & (sup < 1)
        return faces[~mixed[faces].any(axis=1)]

    def forward(self, pts_W: torch.Tensor) -> torch.Tensor:
        """q(x) (N,) at pts_W (N, 3), differentiable w.r.t. pts_W (twice: trilinear products)."""
        if self.n_blocks == 0:
            return pts_W.new_zeros(pts_W.shape[0])
        u = pts_W / self.voxel_m
        i0 = torch.floor(u.detach())
        f = u - i0  # (N, 3), carries the gradient
        tv = self._corner_values(i0.to(torch.int64)).to(pts_W.dtype)
        c = _CORNERS.to(pts_W.device).to(pts_W.dtype)  # (8, 3)
        w = torch.prod(torch.where(c[None] > 0, f[:, None, :], 1.0 - f[:, None, :]), dim=2)  # (N, 8)
        return (w * tv).sum(dim=1)

    @torch.no_grad()
    def value_and_gradient(self, pts_W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q (N,), dq/dx (N, 3)) without autograd."""
        if self.n_blocks == 0:
            return pts_W.new_zeros(pts_W.shape[0]), torch.zeros_like(pts_W)
        u = pts_W / self.voxel_m
        i0 = torch.floor(u)
        f = u - i0
        tv = self._corner_values(i0.to(torch.int64)).to(pts_W.dtype)  # (N, 8), corner order (i, j, k)
        t = tv.reshape(-1, 2, 2, 2)
        fx, fy, fz = f[:, 0, None, None], f[:, 1, None], f[:, 2]
        tx = t[:, 0] * (1 - fx) + t[:, 1] * fx  # (N, 2, 2) along x
        dtx = t[:, 1] - t[:, 0]
        txy = tx[:, 0] * (1 - fy) + tx[:, 1] * fy  # (N, 2)
        value = txy[:, 0] * (1 - fz) + txy[:, 1] * fz
        dty = tx[:, 1] - tx[:, 0]  # (N, 2)
        dxy = dtx[:, 0] * (1 - fy) + dtx[:, 1] * fy  # (N, 2)
        gx = dxy[:, 0] * (1 - fz) + dxy[:, 1] * fz
        gy = dty[:, 0] * (1 - fz) + dty[:, 1] * fz
        gz = txy[:, 1] - txy[:, 0]
        return value, torch.stack([gx, gy, gz], dim=1) / self.voxel_m

    # ------------------------------------------------------------------ state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Block arrays change size as the map grows: take the stored ones as they are (not copy_)."""
        dev = self.tsdf.device
        for name in ("keys", "tsdf", "weight", "inside"):
            k = prefix + name
            if k in state_dict:
                setattr(self, name, state_dict[k].to(device=dev, dtype=getattr(self, name).dtype).clone())
            elif strict:
                missing_keys.append(k)
        if not (self.keys.shape[0] == self.tsdf.shape[0] and self.tsdf.shape == self.weight.shape == self.inside.shape):
            error_msgs.append(f"{prefix}: prior blocks {tuple(self.keys.shape)}, tsdf {tuple(self.tsdf.shape)}, "
                              f"weight {tuple(self.weight.shape)} and inside {tuple(self.inside.shape)} do not match")
            return
        self.t = self._t_of(self.tsdf, self.weight, self.inside)
        self._rebuild_index()


__all__ = ["SdfPrior", "pack", "unpack", "B"]
