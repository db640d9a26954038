"""Cheap previews of the map from a camera: colour, depth and normals in a fraction of a full render.

:meth:`Mapper.render` (``neural-mapping render``) is the reference: it sphere-traces an SDF up to
``render.render_samples`` steps through the whole map box, or volume-renders a NeRF with that many
samples per ray. A preview spends its field evaluations near surfaces only:

1. **Where surfaces can be** (:func:`candidates`): the coverage's observed-surface voxels (those
   holding a depth point), dilated by the SDF truncation plus one voxel and max-pooled by
   ``POOL`` into coarse cells. Space outside is free or unknown; the products (mesh, occupancy)
   treat unknown space as unknown too, so a surface the field extrapolates there is not shown.
2. **Skipping** (:func:`_ray_cells`): every ray samples the coarse cells at one cell's spacing
   between its entry and exit of the map box; for each sample, the index of the next candidate
   sample ahead (a reverse cumulative minimum). Rays that meet none end at once.
3. **SDF fields**: sphere tracing with the fast value path (:func:`neural_mapping.fastquery.value`),
   started at the first candidate sample; a step that lands in a non-candidate cell jumps to the
   next candidate one; at most ``max_steps`` steps, converged at ``|sdf| < eps`` or at
   a sign change (secant refined). At the hits one value-and-gradient pass
   (:func:`~neural_mapping.fastquery.value_and_gradient`) gives the normal (the unit gradient) and
   the geometry features for the colour head, seen along the ray as the full render does.
4. **NeRF fields**: ``nerf_samples`` samples spread over the first run of candidate cells along
   the ray (not the whole box), composited as :mod:`neural_mapping.rendering` does; depth where the
   opacity exceeds 0.5; the normal is minus the density gradient at that depth.

``scale`` > 1 renders ``H / scale`` x ``W / scale`` rays and repeats each pixel (nearest).
Depth is z-depth like the full render's (0 where nothing is hit).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field as dc_field

import numpy as np
import torch
import torch.nn.functional as F

from neural_mapping import fastquery
from neural_mapping import rendering as rd
from neural_mapping.camera import image_rays_W

#: coarse cell = POOL voxels of the coverage
POOL = 2
#: a ray starts (and resumes after a skip) this many samples before its next candidate sample. 0 is
#: safe: cells are dilated by whole cells of at least truncation + one voxel, so a candidate sample
#: (at most one sample, one cell, inside the dilated region) is >= one cell from any observed surface
#: (measured: 12 % fewer field samples than 1, same depth agreement)
EARLY = 0


@dataclass
class Candidates:
    """Coarse cells where a surface can be: ``mask`` (X, Y, Z) bool, cell ``cell_m``, ``origin`` (3,) the
    cell index of mask[0, 0, 0]. ``key`` identifies the coverage state it was made from."""

    cell_m: float
    origin: np.ndarray
    mask: np.ndarray
    key: tuple = ()


@dataclass
class Preview:
    color: np.ndarray  # (H, W, 3) float32 in [0, 1]
    depth: np.ndarray  # (H, W) float32 z-depth, 0 = no hit
    normals: np.ndarray  # (H, W, 3) float32 unit world-frame normals, 0 where no hit
    seconds: float = 0.0
    stats: dict = dc_field(default_factory=dict)  # rays, field samples, steps

    @property
    def hit(self) -> np.ndarray:
        return self.depth > 0


def candidates(mapper, pool: int = POOL) -> Candidates | None:
    """The coarse candidate cells of ``mapper``'s coverage (see the module doc); None before any surface."""
    cov = mapper.coverage
    if cov.n_surface == 0:
        return None
    sm = cov.surface_mask()
    org = np.asarray(sm.origin, np.int64)
    pad_lo = org % pool  # align the coarse lattice on multiples of pool voxels
    m = torch.from_numpy(sm.mask)[None, None].float()
    m = F.pad(m, (int(pad_lo[2]), 0, int(pad_lo[1]), 0, int(pad_lo[0]), 0))
    m = F.max_pool3d(m, pool, stride=pool, ceil_mode=True)
    # dilation by the truncation plus one voxel, in whole cells (separable: three 1-D max pools)
    r = int(math.ceil((mapper.cfg.train.truncation_m + sm.voxel_m) / (sm.voxel_m * pool)))
    m = F.pad(m, (r, r, r, r, r, r))
    for k in ((2 * r + 1, 1, 1), (1, 2 * r + 1, 1), (1, 1, 2 * r + 1)):
        m = F.max_pool3d(m, k, stride=1, padding=tuple(x // 2 for x in k))
    return Candidates(sm.voxel_m * pool, (org - pad_lo) // pool - r, m[0, 0].bool().numpy(),
                      (cov.n_updates, cov.n_surface, pool))


def _ray_cells(cand: Candidates, o: torch.Tensor, du: torch.Tensor, t_in: torch.Tensor, t_out: torch.Tensor):
    """(ds, next (R, S) int32: index of the first candidate sample >= s, S if none) for rays o + t du,
    sampled at t_in + s ds, s < S, with S covering the longest ray's [t_in, t_out]."""
    ds = cand.cell_m
    n_s = ((t_out - t_in) / ds).floor()  # last sample index inside [t_in, t_out] (negative: the ray misses)
    S = max(1, int(n_s.max()) + 2) if len(t_in) else 1
    dev = o.device
    q0 = (o + t_in[:, None] * du) / cand.cell_m - torch.as_tensor(cand.origin, dtype=o.dtype, device=dev)
    dq = du * (ds / cand.cell_m)
    s = torch.arange(S, dtype=o.dtype, device=dev)
    idx = torch.floor(q0[:, None] + s[None, :, None] * dq[:, None]).to(torch.int32)  # (R, S, 3) cells
    shape = cand.mask.shape
    ok = (s[None] <= n_s[:, None])
    for a in range(3):
        ok &= (idx[..., a] >= 0) & (idx[..., a] < shape[a])
    flat = ((idx[..., 0] * shape[1] + idx[..., 1]) * shape[2] + idx[..., 2]).clamp_(0, cand.mask.size - 1)
    hit = torch.from_numpy(cand.mask.reshape(-1)).to(dev)[flat.long()] & ok
    first = torch.where(hit, torch.arange(S, device=dev, dtype=torch.int32)[None],
                        torch.full((1, 1), S, dtype=torch.int32, device=dev))
    nxt = torch.flip(torch.cummin(torch.flip(first, [1]), 1).values, [1])
    return ds, nxt


def _sdf_trace(field, o, du, t_in, t_out, ds, nxt, max_steps, eps, step_scale, min_step):
    """Sphere tracing with cell skipping (module doc, 3): -> t (R,), hit (R,) bool, field samples.
    The state of the active rays is one compacted (n, 11) tensor (origin, direction, t, t_in, t_out,
    previous t and sdf): a step costs what its active rays do, and one gather drops the finished ones."""
    R, S = nxt.shape
    t_all = t_in + (nxt[:, 0].to(t_in.dtype) - EARLY).clamp_min(0) * ds
    hit_all = torch.zeros(R, dtype=torch.bool, device=o.device)
    rid = ((nxt[:, 0] < S) & (t_all < t_out)).nonzero().squeeze(1)
    st = torch.cat([o, du, t_all[:, None], t_in[:, None], t_out[:, None], t_all[:, None],
                    torch.full_like(t_all[:, None], float("nan"))], 1)[rid]
    nxt_flat = nxt.reshape(-1)
    samples = 0
    for _ in range(max_steps):
        if len(rid) == 0:
            break
        o_, du_, t, ti, to, prev_t, prev_s = st[:, :3], st[:, 3:6], st[:, 6], st[:, 7], st[:, 8], st[:, 9], st[:, 10]
        # skip to the next candidate sample (see EARLY)
        si = ((t - ti) * (1.0 / ds)).long().clamp_(0, S - 1)
        nx = nxt_flat[rid * S + si]
        t = torch.maximum(t, ti + (nx - EARLY).clamp_min(0).to(t.dtype) * ds)
        s = fastquery.value(field, torch.addcmul(o_, t[:, None], du_)).to(t.dtype)
        samples += len(rid)
        started = prev_s == prev_s  # not NaN
        crossed = (s < 0) & (prev_s > 0)
        conv = ((s.abs() < eps) | crossed | ((s < 0) & ~started)) & (nx < S)  # inside at the start: hit there
        t = torch.where(crossed, prev_t + (t - prev_t) * prev_s / torch.where(crossed, prev_s - s, 1.0), t)  # secant
        t_all[rid] = t
        hit_all[rid[conv]] = True
        t_next = t + torch.clamp(s, min=min_step) * step_scale
        keep = (~conv & (nx < S) & (t_next < to)).nonzero().squeeze(1)
        st = torch.cat([o_, du_, t_next[:, None], ti[:, None], to[:, None], t[:, None], s[:, None]], 1)[keep]
        rid = rid[keep]
    return t_all, hit_all & (t_all < t_out), samples


def _grad_geo(field, p):
    if fastquery.supports(field):
        return fastquery.value_and_gradient(field, p, want_geo=True)
    return fastquery.autograd_value_and_gradient(field, p, want_geo=True)


def _nerf_march(field, o, du, t_in, t_out, ds, nxt, n_samples):
    """Volume rendering over the first run of candidate cells (module doc, 4): -> t (R,) distance
    along du (0 no hit), colour (R, 3), hit (R,), field samples."""
    R, S = nxt.shape
    first = nxt[:, 0].long()
    has = first < S
    # end of the first run: the first non-candidate sample after `first`
    s_ar = torch.arange(S, device=o.device)[None]
    cand = nxt == s_ar.to(nxt.dtype)
    after = (s_ar > first[:, None]) & ~cand
    end = torch.where(after.any(1), torch.argmax(after.int(), 1), torch.full_like(first, S))
    a = t_in + (first - 1).clamp_min(0).to(t_in.dtype) * ds
    b = torch.minimum(t_in + end.to(t_in.dtype) * ds, t_out)
    col = torch.zeros(R, 3, dtype=o.dtype, device=o.device)
    dist = torch.zeros(R, dtype=o.dtype, device=o.device)
    hit = torch.zeros(R, dtype=torch.bool, device=o.device)
    ih = (has & (b > a)).nonzero().squeeze(1)
    if len(ih) == 0:
        return dist, col, hit, 0
    n = len(ih)
    tt = rd.sample_stratified(a[ih], b[ih], n_samples, perturb=False)  # (n, k)
    pts = (o[ih, None] + tt[..., None] * du[ih, None]).reshape(-1, 3)
    out = field(pts, du[ih, None].expand(n, n_samples, 3).reshape(-1, 3))
    ones = torch.ones(n, device=o.device, dtype=o.dtype)
    w = rd.weights_from_alpha(rd.alpha_from_density(out.value.view(n, n_samples), tt, ones))
    acc = w.sum(1)
    col[ih] = rd.composite(w, out.color.view(n, n_samples, 3))
    ok = acc > 0.5
    dist[ih] = torch.where(ok, rd.composite(w, tt) / acc.clamp_min(1e-6), torch.zeros_like(acc))
    hit[ih] = ok
    return dist, col, hit, n * n_samples


@torch.no_grad()
def preview(mapper, T_WC: np.ndarray, K: np.ndarray, H: int, W: int, *, scale: int = 1, max_steps: int = 48,
            eps: float = 2e-3, step_scale: float = 1.0, min_step: float = 2e-3, nerf_samples: int = 24,
            cand: Candidates | None = None) -> Preview:
    """A preview of the map from camera pose T_WC (4x4, OpenCV axes) with intrinsics K, H x W pixels
    (module doc). ``cand``: candidate cells from :func:`candidates` (computed here when None).
    ``stats``: rays, field samples, scale, seconds per phase (setup, cells, march, hits)."""
    t0 = time.perf_counter()
    scale = max(1, int(scale))
    h, w = -(-H // scale), -(-W // scale)
    color, depth, normals = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32)
    b = mapper.bounds()
    stats = {"rays": h * w, "samples": 0, "scale": scale}
    with mapper.lock:
        cand = cand if cand is not None else candidates(mapper)
        if b is not None and cand is not None:
            field = mapper.field
            field.eval()
            Ks = np.asarray(K, np.float64).copy()
            if scale > 1:  # pixel (u, v) of the small image is the centre of a scale x scale block
                Ks[:2] /= scale
                Ks[0, 2] = (K[0, 2] + 0.5) / scale - 0.5
                Ks[1, 2] = (K[1, 2] + 0.5) / scale - 0.5
            dev = mapper.device
            o, d = image_rays_W(np.asarray(T_WC, np.float64), Ks, h, w, device=dev)
            dn = d.norm(dim=-1)
            du = d / dn[:, None]
            lo, hi = (torch.as_tensor(x, dtype=torch.float32, device=dev) for x in b)
            t_in, t_out = rd.ray_aabb(o, du, lo, hi)
            r = mapper.cfg.render
            t_in = torch.maximum(t_in, r.near_m * dn)
            t_out = torch.minimum(t_out, r.far_m * dn)
            t1 = time.perf_counter()
            ds, nxt = _ray_cells(cand, o, du, t_in, t_out)
            t2 = time.perf_counter()
            if field.kind == "sdf":
                t, hit, n = _sdf_trace(field, o, du, t_in, t_out, ds, nxt, max_steps, eps, step_scale, min_step)
                col = torch.zeros_like(o)
            else:
                t, col, hit, n = _nerf_march(field, o, du, t_in, t_out, ds, nxt, nerf_samples)
            stats["samples"] = n
            t3 = time.perf_counter()
            ih = hit.nonzero().squeeze(1)
            nrm = torch.zeros_like(o)
            if len(ih):
                p = o[ih] + t[ih, None] * du[ih]
                _, g, geo = _grad_geo(field, p)
                nv = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-9)
                nv = nv if field.kind == "sdf" else -nv
                nrm[ih] = nv.to(nrm.dtype)
                if field.kind == "sdf":
                    col[ih] = field.color(geo, du[ih], p, normal=nv).to(col.dtype)
                stats["samples"] += len(ih)
            z = torch.where(hit, t / dn, torch.zeros_like(t))
            color = col.clamp(0, 1).reshape(h, w, 3).cpu().numpy().astype(np.float32)
            depth = z.reshape(h, w).cpu().numpy().astype(np.float32)
            normals = nrm.reshape(h, w, 3).cpu().numpy().astype(np.float32)
            stats["phase_s"] = {"setup": round(t1 - t0, 4), "cells": round(t2 - t1, 4), "march": round(t3 - t2, 4),
                                "hits": round(time.perf_counter() - t3, 4)}
    if scale > 1:
        up = lambda a: np.repeat(np.repeat(a, scale, 0), scale, 1)[:H, :W]  # noqa: E731
        color, depth, normals = up(color), up(depth), up(normals)
    return Preview(color, depth, normals, time.perf_counter() - t0, stats)
