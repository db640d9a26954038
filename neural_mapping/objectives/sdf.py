"""The signed-distance objective: truncated SDF supervision from depth, sphere-traced rendering.

Samples on a training ray are stratified up to ``depth - truncation`` plus depth-guided around
the measured surface. Losses (see :mod:`neural_mapping.losses`): the SDF band around the
surface (no deeper behind it than the ray's lateral distance to a silhouette), free space in
front of it, optionally the eikonal term in the band, a NeuS-weighted expected depth and the
colour at the measured surface point.

Beyond the band the field is a distance, not a constant ``truncation_m`` (iSDF, Ortiz et al. 2022):
the distance from a free-space sample to any observed surface point bounds its SDF from above. The
cheap bound used here is the nearest of the ray's own surface point and :data:`BOUND_POINTS`
surface points of the batch (its rays are random, so they spread over what was seen); free
samples get a hinge above that bound (weight ``train.w_sdf_bound``, off by default) and a weak L1 pull towards it
(``w_sdf_bound * BOUND_PULL``), so the field grows with the distance to the nearest seen surface.
"""

from __future__ import annotations

import numpy as np
import torch

from neural_mapping import rendering as rd
from neural_mapping.keyframes import RayBatch
from neural_mapping.losses import (_masked_mean, color_loss, depth_loss, eikonal_loss, free_space_loss, sdf_band_loss,
                                   weighted_total)
from neural_mapping.objectives.base import LossResult, Objective


#: surface points of the batch a free sample's distance bound is taken over; weight of the pull to it
BOUND_POINTS = 256
BOUND_PULL = 0.02


def batch_distance_bound(pts: torch.Tensor, surf: torch.Tensor, along_ray: torch.Tensor) -> torch.Tensor:
    """Upper bound of the SDF at free points (F, 3): the nearest of their ray's surface point
    (``along_ray`` (F,), m) and the surface points ``surf`` (M, 3)."""
    if surf.shape[0] == 0:
        return along_ray
    return torch.minimum(torch.cdist(pts, surf).min(1).values, along_ray)


class SdfObjective(Objective):
    """Training and rendering of a :class:`~neural_mapping.fields.SdfField` (value: signed distance, m)."""

    kind = "sdf"

    def loss(self, b: RayBatch) -> LossResult:
        c = self.cfg
        tr = c.train.truncation_m
        t, pts, dn = self.ray_samples(b, b.depth - tr)  # (R, S), (R * S, 3), (R,)
        R, S = t.shape
        want_color = c.train.w_color > 0
        if want_color:  # one more point per ray at the measured surface, for the colour head
            pts = torch.cat([pts, b.origins_W + b.depth[:, None] * b.dirs_W], 0)
        eik = c.train.w_eikonal > 0
        if eik:
            pts.requires_grad_(True)
        out = self.field(pts)
        sdf = out.value[: R * S].view(R, S)
        back_cfg = tr * c.train.truncation_back
        # behind the surface, the band of a ray near a silhouette is no deeper than its lateral distance
        # to the silhouette: past an object's outline lies what other views see as free space
        back = back_cfg if b.edge_m is None else torch.clamp(b.edge_m, max=back_cfg)[:, None]  # float or (R, 1)
        l_sdf = sdf_band_loss(sdf, t, b.depth, tr, back)
        l_free = free_space_loss(sdf, t, b.depth, tr, dn, back_cfg if c.train.behind_prior else None)
        l_eik = l_depth = l_col = None
        if eik:
            g = torch.autograd.grad(out.value[: R * S].sum(), pts, create_graph=True)[0][: R * S]
            ahead = b.depth[:, None] - t
            band = ((ahead <= tr) & (ahead >= -back)).reshape(-1)
            l_eik = eikonal_loss(g, band)  # masked mean: no boolean indexing, no host sync
        if c.train.w_depth > 0:
            w = rd.weights_from_alpha(rd.neus_alpha(sdf, c.render.sdf_beta))
            d_pred = (w * t).sum(1) / (w.sum(1) + 1e-6)
            l_depth = depth_loss(d_pred, b.depth)
        if want_color:
            col = self.field.color(out.geo[R * S:], b.dirs_W / dn[:, None], pts[R * S:])
            l_col = color_loss(col, b.rgb)
        total, terms = weighted_total(c.train, sdf=l_sdf, free=l_free, eikonal=l_eik, depth=l_depth, color=l_col)
        ahead = b.depth[:, None] - t
        free = ahead > tr
        if c.train.w_sdf_bound > 0:  # over the free samples, as a masked mean (no host sync)
            with torch.no_grad():
                surf = (b.origins_W + b.depth[:, None] * b.dirs_W)[:BOUND_POINTS]
                bound = batch_distance_bound(pts[: R * S].detach(), surf, (ahead * dn[:, None]).reshape(-1)).view(R, S)
            e = torch.where(free, sdf - bound, torch.zeros_like(sdf))
            total = total + c.train.w_sdf_bound * _masked_mean(torch.relu(e) ** 2 + BOUND_PULL * e.abs(), free.to(sdf.dtype))
        with torch.no_grad():
            target = b.depth[:, None] - t
            band = ((target <= tr) & (target >= -back)).float()
            ray_loss = ((sdf - target).abs() * band).sum(1) / band.sum(1).clamp_min(1)
        return total, terms, ray_loss, pts.shape[0]

    def _value(self, pts: torch.Tensor) -> torch.Tensor:
        return self.field(pts).value

    @torch.no_grad()
    def render_rays(self, o, d, t_in, t_out):
        """Sphere tracing to the first zero crossing; colour seen along the ray there, opacity 0 or 1."""
        dn = d.norm(dim=-1)
        du = d / dn[:, None]
        valid = t_out > t_in
        t, hit = rd.sphere_trace(self._value, o, du, t_in * dn, t_out * dn,
                                 n_steps=self.cfg.render.render_samples, eps=1e-3)
        hit &= valid
        z = torch.where(hit, t / dn, torch.zeros_like(t))
        if o.device.type == "cpu":  # the hits only (syncs cost nothing on the CPU; the colour head is the work)
            col = torch.zeros_like(o)
            if bool(hit.any()):
                ih = hit.nonzero().squeeze(1)
                out = self.field(o[ih] + t[ih, None] * du[ih])
                col[ih] = self.field.color(out.geo, du[ih], o[ih] + t[ih, None] * du[ih])
        else:  # every ray, masked: fixed shapes, no host sync
            p = o + t[:, None] * du
            col = torch.where(hit[:, None], self.field.color(self.field(p).geo, du, p), torch.zeros_like(o))
        return col, z, hit.float()

    def occupancy_from_value(self, vals: np.ndarray) -> np.ndarray:
        """sigmoid(-sdf / (truncation / 10)): 0.5 on the surface, -> 1 inside, -> 0 outside."""
        v = np.asarray(vals, dtype=np.float64)
        s = self.cfg.train.truncation_m / 10.0
        return (0.5 * (1.0 + np.tanh(-v / (2 * s)))).astype(np.float32)  # = sigmoid(-v/s), overflow-free

    def surface_value(self, values: np.ndarray, occupancy: np.ndarray | None = None) -> np.ndarray:
        """The signed distance itself."""
        return np.asarray(values, dtype=np.float32)
