"""The :class:`Objective` interface: what a field kind means for training and rendering.

A :class:`~neural_mapping.mapper.Mapper` keeps frames, bounds, coverage, the optimiser and
persistence; everything that depends on what the field's value *is* (a signed distance, a
density) lives in one objective per kind: where to put samples on a training ray, the loss,
how to render a ray, and how to turn a value into occupancy or a surface level set.

Ray conventions are :mod:`neural_mapping.rendering`'s: ``origin (R, 3) + t * dir (R, 3)`` with
``dir`` z-scaled in the camera, so ``t`` is the camera z-depth. Every random draw comes from
the map's own :attr:`generator`, never from torch's global RNG.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

from neural_mapping import rendering as rd
from neural_mapping.config import MapperConfig
from neural_mapping.keyframes import RayBatch
from neural_mapping.losses import LossTerms

#: (total loss (scalar, differentiable), unweighted terms, per-ray loss (R,) for keyframe
#: sampling, number of points the field evaluated)
LossResult = tuple[torch.Tensor, LossTerms, torch.Tensor, int]


def ray_points(origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The points ``origins + t * dirs`` of rays at depths t: (R, 3), (R, 3), (R, S) -> (R * S, 3)."""
    return (origins[:, None, :] + t[..., None] * dirs[:, None, :]).reshape(-1, 3)


class Objective(ABC):
    """Training and rendering rules of one field kind (see module doc).

    ``cfg`` is the map's config object (shared, not copied), ``field`` its field and
    ``generator`` its :class:`torch.Generator`; the map builds a new objective whenever it
    builds a new field.
    """

    #: the ``cfg.field.kind`` this objective serves
    kind: str = ""

    def __init__(self, cfg: MapperConfig, field: nn.Module, generator: torch.Generator):
        self.cfg = cfg
        self.field = field
        self.generator = generator

    # ------------------------------------------------------------------ shared helpers

    def sample_t(self, batch: RayBatch, far: torch.Tensor) -> torch.Tensor:
        """Sorted sample depths (R, S): stratified in [near, far] plus depth-guided around the depth."""
        r = self.cfg.render
        near = torch.full_like(batch.depth, r.near_m)
        far = torch.maximum(far, near + 1e-3)
        parts = []
        if r.n_stratified:
            parts.append(rd.sample_stratified(near, far, r.n_stratified, generator=self.generator))
        if r.n_surface:
            parts.append(rd.sample_surface(batch.depth, r.n_surface, r.surface_std_m, generator=self.generator))
        t = torch.cat(parts, dim=1)
        return torch.sort(t, dim=1).values

    def ray_samples(self, batch: RayBatch, far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample_t` depths t (R, S), their points (R * S, 3) and the rays' |dir| (R,)."""
        t = self.sample_t(batch, far)
        return t, ray_points(batch.origins_W, batch.dirs_W, t), batch.dirs_W.norm(dim=-1)

    def render_image(self, o: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                     chunk: int = 8192) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render rays o, d (P, 3) inside the box [lo, hi] (3,) and the render near/far, ``chunk``
        rays at a time with :meth:`render_rays` -> colour (P, 3), z-depth (P,), opacity (P,) float32."""
        P = o.shape[0]
        cs, zs, as_ = [], [], []
        for s in range(0, P, chunk):  # the chunks stay on the device: one copy to the host at the end
            oc, dc = o[s:s + chunk], d[s:s + chunk]
            t_in, t_out = rd.ray_aabb(oc, dc, lo, hi)  # in z-depth units (d is z-scaled)
            t_in = torch.clamp(t_in, min=self.cfg.render.near_m)
            t_out = torch.clamp(t_out, max=self.cfg.render.far_m)
            c, z, a = self.render_rays(oc, dc, t_in, t_out)
            cs.append(c.float())
            zs.append(z.float())
            as_.append(a.float())
        if P == 0:
            return np.zeros((0, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
        color = torch.cat(cs).cpu().numpy().astype(np.float32, copy=False)
        depth = torch.cat(zs).cpu().numpy().astype(np.float32, copy=False)
        opac = torch.cat(as_).cpu().numpy().astype(np.float32, copy=False)
        return color, depth, opac

    # ------------------------------------------------------------------ the kind's rules

    @abstractmethod
    def loss(self, batch: RayBatch) -> LossResult:
        """The training loss on a batch of rays -> (total, terms, ray_loss (R,), n_samples)."""

    @abstractmethod
    def render_rays(self, o: torch.Tensor, d: torch.Tensor, t_in: torch.Tensor,
                    t_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Render rays o (R, 3), d (R, 3) (z-scaled) between depths t_in, t_out (R,), without
        gradients -> (colour (R, 3) in [0, 1], z-depth (R,) with 0 = no hit, opacity (R,) in [0, 1])."""

    @abstractmethod
    def occupancy_from_value(self, vals: np.ndarray) -> np.ndarray:
        """Occupancy probability (N,) float32 in [0, 1] from raw field values (N,)."""

    @abstractmethod
    def surface_value(self, values: np.ndarray, occupancy: np.ndarray | None = None) -> np.ndarray:
        """A value (N,) float32 that is negative inside, positive outside and zero on the surface,
        from raw field values (N,) (a query's ``sdf``).

        ``occupancy`` (a query's, 0.5 where space is unobserved) is for kinds whose value alone
        cannot say; the sdf and nerf objectives ignore it, since a level set taken from it would
        run along the border of the observed region.
        """
