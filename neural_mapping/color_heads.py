"""The reflection-aware colour head of Ref-NeRF (Verbin et al. 2022), for SDF and NeRF fields.

A plain head colours a point from its geometry features and the view direction ``d``: a
mirror's view-dependent colour is then easiest to explain by geometry *behind* the mirror (a
phantom room seen through a window). Ref-NeRF parameterises the outgoing radiance by the
direction the view **reflects** to about the surface normal ``n``,

    w_r = d - 2 (d . n) n,

encodes it with the *integrated directional encoding* (IDE, eq. 7): the spherical harmonics
``Y_lm(w_r)`` of band l attenuated by ``exp(-l (l + 1) / (2 kappa))`` with ``kappa = 1 /
roughness`` (the expectation of Y_lm under a von Mises-Fisher lobe of concentration kappa:
rough surfaces keep only low bands), and splits the colour into a view-independent diffuse
part and a tinted specular part:

    colour = clip(diffuse + tint * specular(geo, IDE(w_r, roughness), n . (-d)), 0, 1).

The normal is the field's: the normalised gradient of the signed distance, or the negative
normalised density gradient (it points out of the surface). Bands 0..4 here (Ref-NeRF uses
up to 2^4; :class:`~neural_mapping.encodings.SHEncoding` stops at 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neural_mapping.encodings import SHEncoding


def reflect(d: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The direction d (N, 3) reflected about unit normals n (N, 3): d - 2 (d . n) n."""
    return d - 2.0 * (d * n).sum(-1, keepdim=True) * n


def sh_bands(degree: int) -> torch.Tensor:
    """The band l of each real SH coefficient of degrees 0..degree: ((degree + 1)^2,) float."""
    return torch.tensor([float(l) for l in range(degree + 1) for _ in range(2 * l + 1)])


def ide_attenuation(roughness: torch.Tensor, degree: int) -> torch.Tensor:
    """exp(-l (l + 1) / (2 kappa)), kappa = 1 / roughness, per coefficient: (N, 1) -> (N, (degree + 1)^2)."""
    l = sh_bands(degree).to(roughness)
    return torch.exp(-0.5 * l * (l + 1) * roughness)


class IntegratedDirEncoding(nn.Module):
    """IDE(w, roughness) = Y(w) * attenuation(roughness): (N, 3) unit, (N, 1) > 0 -> (N, (degree + 1)^2)."""

    def __init__(self, degree: int = 4):
        super().__init__()
        self.sh = SHEncoding(degree)
        self.degree = degree
        self.out_dim = self.sh.out_dim

    def forward(self, w: torch.Tensor, roughness: torch.Tensor) -> torch.Tensor:
        return self.sh(w) * ide_attenuation(roughness, self.degree)


class ReflectiveColorHead(nn.Module):
    """Diffuse + tint * specular(reflected direction), as Ref-NeRF (see module doc).

    ``forward(geo (N, G), dirs (N, 3) unit, normal (N, 3) unit) -> (N, 3)`` in [0, 1]. The
    roughness starts near softplus(-1) = 0.31 (bands up to 2 survive), the tint near
    sigmoid(-1) = 0.27, so a young map is mostly diffuse.
    """

    def __init__(self, n_geo: int, hidden: int = 64, degree: int = 4):
        super().__init__()
        self.ide = IntegratedDirEncoding(degree)
        self.diffuse = nn.Linear(n_geo, 3)
        self.tint = nn.Linear(n_geo, 3)
        self.roughness = nn.Linear(n_geo, 1)
        self.specular = nn.Sequential(nn.Linear(n_geo + self.ide.out_dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        with torch.no_grad():
            self.tint.bias.fill_(-1.0)
            self.roughness.bias.fill_(-1.0)

    def components(self, geo: torch.Tensor, dirs: torch.Tensor, normal: torch.Tensor) -> dict[str, torch.Tensor]:
        """diffuse, tint, specular (N, 3), roughness (N, 1) and the reflected direction (N, 3)."""
        rough = F.softplus(self.roughness(geo))
        w_r = reflect(dirs, normal)
        n_dot_o = -(dirs * normal).sum(-1, keepdim=True)
        spec = torch.sigmoid(self.specular(torch.cat([geo, self.ide(w_r, rough), n_dot_o], -1)))
        return {"diffuse": torch.sigmoid(self.diffuse(geo)), "tint": torch.sigmoid(self.tint(geo)),
                "specular": spec, "roughness": rough, "reflected": w_r}

    def forward(self, geo: torch.Tensor, dirs: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        c = self.components(geo, dirs, normal)
        return torch.clamp(c["diffuse"] + c["tint"] * c["specular"], 0.0, 1.0)
