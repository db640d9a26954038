"""The radiance-field (NeRF) objective: volume rendering of density and colour.

Samples on a training ray are stratified up to ``1.2 depth + 0.1`` m plus depth-guided around
the measured surface. Losses: colour and expected depth of the composited ray, and no weight
in front of the surface (free space). Rendering: coarse samples, then importance samples from
their weights (both deterministic: no random draw).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from neural_mapping import rendering as rd
from neural_mapping.keyframes import RayBatch
from neural_mapping.losses import color_loss, depth_loss, weighted_total
from neural_mapping.objectives.base import LossResult, Objective, ray_points


def _no_last_bin(alpha: torch.Tensor) -> torch.Tensor:
    """alpha (R, S) with the last sample's (an infinite bin beyond the samples) set to 0."""
    return torch.cat([alpha[:, :-1], torch.zeros_like(alpha[:, :1])], 1)


class NerfObjective(Objective):
    """Training and rendering of a :class:`~neural_mapping.fields.RadianceField` (value: density, 1/m)."""

    kind = "nerf"

    def loss(self, b: RayBatch) -> LossResult:
        c = self.cfg
        t, pts, dn = self.ray_samples(b, b.depth * 1.2 + 0.1)  # (R, S), (R * S, 3), (R,)
        R, S = t.shape
        dirs = (b.dirs_W / dn[:, None])[:, None, :].expand(R, S, 3).reshape(-1, 3)
        out = self.field(pts, dirs)
        dens = out.value.view(R, S)
        alpha = _no_last_bin(rd.alpha_from_density(dens, t, dn))  # as in render
        w = rd.weights_from_alpha(alpha)  # (R, S)
        col = rd.composite(w, out.color.view(R, S, 3))
        d_pred = rd.composite(w, t)
        l_col = color_loss(col, b.rgb)
        l_depth = depth_loss(d_pred, b.depth)
        free = ((b.depth[:, None] - t) > c.train.truncation_m).float()
        l_free = (w * w * free).sum() / free.sum().clamp_min(1)  # no weight in front of the surface
        tc = dataclasses.replace(c.train, w_depth=c.train.w_depth_nerf, w_free=c.train.w_free_nerf)
        total, terms = weighted_total(tc, free=l_free, depth=l_depth, color=l_col)
        with torch.no_grad():
            ray_loss = (d_pred - b.depth).abs() + ((col - b.rgb) ** 2).mean(-1)
        return total, terms, ray_loss, pts.shape[0]

    @torch.no_grad()
    def render_rays(self, o, d, t_in, t_out):
        """Half the ``render_samples`` evenly spaced in [t_in, t_out], half importance-sampled from
        their weights; nothing beyond t_out. Depth is 0 where the opacity stays under 0.5."""
        R = o.shape[0]
        dn = d.norm(dim=-1)
        du = d / dn[:, None]
        valid = t_out > t_in
        t_out = torch.where(valid, t_out, t_in + 1e-3)
        n_c = self.cfg.render.render_samples // 2
        n_f = self.cfg.render.render_samples - n_c
        t_c = rd.sample_stratified(t_in, t_out, n_c, perturb=False)  # (R, n_c)
        dens = self.field(ray_points(o, d, t_c)).value.view(R, n_c)
        w = rd.weights_from_alpha(rd.alpha_from_density(dens, t_c, dn))
        edges = torch.cat([t_in[:, None], 0.5 * (t_c[:, 1:] + t_c[:, :-1]), t_out[:, None]], 1)  # (R, n_c+1)
        t_f = rd.sample_pdf(edges, w, n_f, perturb=False)
        t = torch.sort(torch.cat([t_c, t_f], 1), 1).values
        S = t.shape[1]
        out = self.field(ray_points(o, d, t), du[:, None].expand(R, S, 3).reshape(-1, 3))
        dens = out.value.view(R, S)
        w = rd.weights_from_alpha(_no_last_bin(rd.alpha_from_density(dens, t, dn)))  # nothing beyond the box
        acc = w.sum(1)
        col = rd.composite(w, out.color.view(R, S, 3))
        z = rd.composite(w, t) / acc.clamp_min(1e-6)
        z = torch.where(valid & (acc > 0.5), z, torch.zeros_like(z))
        return col, z, acc * valid

    def occupancy_from_value(self, vals: np.ndarray) -> np.ndarray:
        """1 - exp(-density * occupancy.resolution_m): the opacity of one voxel of that density."""
        v = np.asarray(vals, dtype=np.float64)
        return (1.0 - np.exp(-np.maximum(v, 0) * self.cfg.occupancy.resolution_m)).astype(np.float32)

    def surface_value(self, values: np.ndarray, occupancy: np.ndarray | None = None) -> np.ndarray:
        """0.5 - the occupancy of the raw density: the surface is where a voxel turns half opaque."""
        return (0.5 - self.occupancy_from_value(values)).astype(np.float32)
