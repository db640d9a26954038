"""Ray sampling and rendering as pure functions.

Conventions: a ray is ``origin (R, 3) + t * dir (R, 3)`` where ``dir`` is z-scaled in the
camera (``camera.pixel_dirs_C``), so ``t`` equals the camera z-depth. Euclidean step
lengths are ``dt * |dir|``.
"""

from __future__ import annotations

from typing import Callable

import torch


# ----------------------------------------------------------------------------- samplers


def sample_stratified(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool = True,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples per ray, one uniform in each of n equal bins of [near, far]: (R,), (R,) -> (R, n)."""
    R = near.shape[0]
    u = torch.arange(n, device=near.device, dtype=near.dtype)[None, :].expand(R, n)
    u = u + (torch.rand(R, n, device=near.device, dtype=near.dtype, generator=generator) if perturb else 0.5)
    return near[:, None] + (far - near)[:, None] * (u / n)


def sample_surface(depth: torch.Tensor, n: int, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """n depth-guided samples ~ N(depth, std^2), clamped to >= 0: (R,) -> (R, n)."""
    noise = torch.randn(depth.shape[0], n, device=depth.device, dtype=depth.dtype, generator=generator)
    return (depth[:, None] + std * noise).clamp_min(0.0)


def sample_pdf(t_mid: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance samples from the piecewise-constant pdf ``weights (R, S-1)`` over bins with
    edges ``t_mid (R, S)``: -> (R, n) (inverse-transform sampling, as in NeRF)."""
    w = weights + 1e-5
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (R, S)
    R = t_mid.shape[0]
    if perturb:
        u = torch.rand(R, n, device=t_mid.device, dtype=t_mid.dtype, generator=generator)
    else:
        u = ((torch.arange(n, device=t_mid.device, dtype=t_mid.dtype) + 0.5) / n).expand(R, n).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[1] - 1)
    c0, c1 = torch.gather(cdf, 1, idx - 1), torch.gather(cdf, 1, idx)
    b0, b1 = torch.gather(t_mid, 1, idx - 1), torch.gather(t_mid, 1, idx)
    frac = (u - c0) / (c1 - c0).clamp_min(1e-8)
    return b0 + frac * (b1 - b0)


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """Entry and exit ``t`` of rays (R, 3) through the box [lo, hi] (3,): -> t_in (R,), t_out (R,).

    t_out < t_in where a ray misses; t_in is clamped to >= 0.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (lo - origins) * inv
    t1 = (hi - origins) * inv
    t_in = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_out = torch.maximum(t0, t1).amin(-1)
    return t_in, t_out


# ----------------------------------------------------------------------------- volume rendering


def alpha_from_density(density: torch.Tensor, t: torch.Tensor, dir_norm: torch.Tensor) -> torch.Tensor:
    """alpha_i = 1 - exp(-sigma_i * delta_i), delta_i = (t_{i+1} - t_i) |dir|, last delta = 1e10.

    density (R, S) 1/m, t (R, S) sorted, dir_norm (R,) -> (R, S).
    """
    dt = torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)], dim=-1)
    return 1.0 - torch.exp(-density * dt * dir_norm[:, None])


def weights_from_alpha(alpha: torch.Tensor) -> torch.Tensor:
    """w_i = alpha_i * prod_{j<i} (1 - alpha_j): (R, S) -> (R, S)."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], -1), -1)
    return alpha * trans


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i v_i: (R, S), (R, S, C) -> (R, C)  or  (R, S), (R, S) -> (R,)."""
    if values.dim() == 3:
        return (weights[..., None] * values).sum(1)
    return (weights * values).sum(1)


def neus_alpha(sdf: torch.Tensor, beta: float) -> torch.Tensor:
    """Discrete NeuS opacity from SDF samples along sorted rays.

    Phi = sigmoid(sdf / beta); alpha_i = max((Phi_i - Phi_{i+1}) / Phi_i, 0) for i < S-1, alpha_{S-1} = 0.
    sdf (R, S) -> (R, S). The weights peak where the SDF crosses zero going inwards.
    """
    phi = torch.sigmoid(sdf / beta)
    a = ((phi[:, :-1] - phi[:, 1:]) / (phi[:, :-1] + 1e-6)).clamp(0.0, 1.0)
    return torch.cat([a, torch.zeros_like(a[:, :1])], dim=-1)


def bell_weights(sdf: torch.Tensor, truncation: float) -> torch.Tensor:
    """Co-SLAM weights: w = sigmoid(s/tr) * sigmoid(-s/tr), normalised along each ray: (R, S) -> (R, S)."""
    w = torch.sigmoid(sdf / truncation) * torch.sigmoid(-sdf / truncation)
    return w / (w.sum(-1, keepdim=True) + 1e-8)


@torch.no_grad()
def sphere_trace(sdf_fn: Callable[[torch.Tensor], torch.Tensor], origins: torch.Tensor, dirs_unit: torch.Tensor,
                 t_near: torch.Tensor, t_far: torch.Tensor, n_steps: int = 64, eps: float = 2e-3,
                 step_scale: float = 0.9, min_step: float = 1e-3):
    """Sphere tracing: t <- t + step_scale * max(sdf, min_step) until |sdf| < eps.

    origins (R, 3), dirs_unit (R, 3) unit length, t_near/t_far (R,) in metres along the ray.
    Returns (t (R,), hit (R,) bool). A sign change between steps is refined by the secant rule.

    On the CPU the active rays are compacted every step (the field is the work; syncs cost nothing
    there). Elsewhere (CUDA) every ray is evaluated every step with masked updates: fixed shapes and
    no host sync (no ``nonzero``, no early exit); both give the same t and hit.
    """
    if origins.device.type != "cpu":
        return _sphere_trace_masked(sdf_fn, origins, dirs_unit, t_near, t_far, n_steps, eps, step_scale, min_step)
    t = t_near.clone()
    active = t < t_far
    hit = torch.zeros_like(active)
    prev_t = t.clone()
    prev_s = torch.full_like(t, float("inf"))
    for _ in range(n_steps):
        if not bool(active.any()):
            break
        ia = active.nonzero().squeeze(1)
        s = sdf_fn(origins[ia] + t[ia, None] * dirs_unit[ia])
        crossed = (s < 0) & torch.isfinite(prev_s[ia]) & (prev_s[ia] > 0)
        conv = (s.abs() < eps) | crossed
        if bool(crossed.any()):  # secant between the previous positive and this negative sample
            ic = ia[crossed]
            s0, s1 = prev_s[ic], s[crossed]
            t[ic] = prev_t[ic] + (t[ic] - prev_t[ic]) * s0 / (s0 - s1)
        hit[ia[conv]] = True
        prev_t[ia] = t[ia]
        prev_s[ia] = s
        step = torch.clamp(s, min=min_step) * step_scale
        t[ia] = torch.where(conv, t[ia], t[ia] + step)
        active[ia] = ~conv & (t[ia] < t_far[ia])
    hit &= t < t_far
    return t, hit


def _sphere_trace_masked(sdf_fn, origins, dirs_unit, t_near, t_far, n_steps, eps, step_scale, min_step):
    """:func:`sphere_trace` without compaction: a converged or exited ray keeps its t (same results)."""
    t = t_near.clone()
    active = t < t_far
    hit = torch.zeros_like(active)
    prev_t = t.clone()
    prev_s = torch.full_like(t, float("inf"))
    for _ in range(n_steps):
        s = sdf_fn(origins + t[:, None] * dirs_unit)
        crossed = active & (s < 0) & torch.isfinite(prev_s) & (prev_s > 0)
        conv = active & ((s.abs() < eps) | crossed)
        t = torch.where(crossed, prev_t + (t - prev_t) * prev_s / (prev_s - s), t)  # secant
        hit = hit | conv
        prev_t = torch.where(active, t, prev_t)
        prev_s = torch.where(active, s, prev_s)
        t = torch.where(active & ~conv, t + torch.clamp(s, min=min_step) * step_scale, t)
        active = active & ~conv & (t < t_far)
    hit &= t < t_far
    return t, hit
