"""Training losses as pure functions, plus their weighted sum from ``TrainConfig``.

SDF supervision from depth (Co-SLAM / iSDF style), for a sample at z-depth ``t`` on a ray
whose measured z-depth is ``D``:
- inside the truncation band ``-back <= D - t <= tr``: the signed distance target is ``D - t``;
  ``back`` is ``tr`` or less: the mapper limits it per ray to the ray's lateral distance to the
  nearest silhouette in its image (``keyframes.silhouette_distance_m``), so that an object's band
  does not reach past its outline into space that other views see free;
- in front of the band ``D - t > tr``: the sample is free space; the SDF must lie in
  ``[tr, bound]`` where ``bound = (D - t) |dir|`` is the Euclidean distance to the measured
  surface point along the ray (an upper bound of the true distance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from neural_mapping.config import TrainConfig


@dataclass
class LossTerms:
    """Unweighted loss terms of one step (0.0 where a term is not used)."""

    sdf: float = 0.0
    free: float = 0.0
    eikonal: float = 0.0
    depth: float = 0.0
    color: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    return torch.where(n > 0, (x * mask).sum() / n.clamp_min(1), x.new_zeros(()))


def sdf_band_loss(sdf: torch.Tensor, t: torch.Tensor, depth: torch.Tensor, truncation: float,
                  back: float | None = None) -> torch.Tensor:
    """Mean squared error to ``D - t`` over samples inside the band ``-back <= D - t <= truncation``
    (``back`` defaults to ``truncation``: a symmetric band; a (R, 1) tensor gives one per ray).

    sdf (R, S), t (R, S), depth (R,) -> scalar.
    """
    target = depth[:, None] - t
    band = ((target <= truncation) & (target >= -(truncation if back is None else back))).to(sdf.dtype)
    return _masked_mean((sdf - target) ** 2, band)


def free_space_loss(sdf: torch.Tensor, t: torch.Tensor, depth: torch.Tensor, truncation: float,
                    dir_norm: torch.Tensor, back: float | None = None) -> torch.Tensor:
    """Mean over free-space samples of relu(tr - sdf)^2 + relu(sdf - bound)^2.

    With ``back`` (< truncation) the samples between ``back`` and ``truncation`` behind the
    measured surface, which the SDF band no longer supervises, join the mean with relu(sdf)^2:
    a weak "not free space" prior that free-space evidence from other rays can override.
    sdf (R, S), t (R, S), depth (R,), dir_norm (R,) -> scalar.
    """
    ahead = depth[:, None] - t
    free = ahead > truncation
    bound = ahead * dir_norm[:, None]
    pen = torch.relu(truncation - sdf) ** 2 + torch.relu(sdf - bound) ** 2
    if back is not None and back < truncation:
        behind = (ahead < -back) & (ahead >= -truncation)
        pen = torch.where(behind, torch.relu(sdf) ** 2, pen)
        free = free | behind
    return _masked_mean(pen, free.to(sdf.dtype))


def eikonal_loss(grad: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean (|grad| - 1)^2 over points (N, 3) -> scalar; with ``mask`` (N,) bool, over the masked points
    (0 where none), without boolean indexing (no host sync on CUDA)."""
    if mask is None:
        return ((grad.norm(dim=-1) - 1.0) ** 2).mean()
    # unmasked rows become unit vectors: finite, zero loss and zero gradient (a zero row's norm has none)
    g = torch.where(mask[:, None], grad, grad.new_tensor(3 ** -0.5))
    return _masked_mean((g.norm(dim=-1) - 1.0) ** 2, mask.to(grad.dtype))


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute depth error (m) over ``mask``: (R,), (R,) -> scalar."""
    err = (pred - target).abs()
    return err.mean() if mask is None else _masked_mean(err, mask.to(err.dtype))


def color_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared colour error: (R, 3), (R, 3) -> scalar."""
    return ((pred - target) ** 2).mean()


def psnr(mse: float) -> float:
    """PSNR (dB) of images in [0, 1] from their mean squared error."""
    import math

    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def weighted_total(cfg: TrainConfig, sdf=None, free=None, eikonal=None, depth=None, color=None):
    """sum of w_term * term for the terms given -> (scalar tensor, LossTerms of the unweighted terms).

    The terms given are stored as detached 0-d tensors (floats for terms not given), so a training step
    waits for no GPU result; ``Mapper`` reads them back in one copy when they are asked for."""
    total = None
    terms = LossTerms()
    for name, val, w in (("sdf", sdf, cfg.w_sdf), ("free", free, cfg.w_free), ("eikonal", eikonal, cfg.w_eikonal),
                         ("depth", depth, cfg.w_depth), ("color", color, cfg.w_color)):
        if val is None:
            continue
        setattr(terms, name, val.detach())  # a 0-d tensor: read to the host only when used (no sync per step)
        if w == 0:
            continue
        total = w * val if total is None else total + w * val
    if total is None:
        raise ValueError("no loss term with a non-zero weight")
    return total, terms
