"""Neural fields: ``SdfField`` (signed distance + colour) and ``RadianceField`` (NeRF).

Both map world points ``pts_W (N, 3)`` in metres (and optionally unit view directions
``dirs_W (N, 3)``) to a :class:`FieldOutput`. Trunks are an MLP (relu / softplus / sine
activation) or a SIREN with its published initialisation. The colour head is ``plain`` (geometry
features + encoded view direction) or ``reflective`` (Ref-NeRF: :mod:`neural_mapping.color_heads`),
which also needs the field's normal where it colours: :meth:`_FieldBase.normal`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neural_mapping import hashgrid_ext
from neural_mapping.color_heads import ReflectiveColorHead
from neural_mapping.config import MapperConfig
from neural_mapping.encodings import direction_encoding, position_encoding
from neural_mapping.sdf_prior import SdfPrior


@dataclass
class FieldOutput:
    """Field values at N points."""

    value: torch.Tensor  # (N,) signed distance in m (SdfField) or density in 1/m (RadianceField)
    geo: torch.Tensor  # (N, G) geometry features for the colour head
    color: torch.Tensor | None = None  # (N, 3) in [0, 1] when directions were given / asked for


class Sine(nn.Module):
    def __init__(self, w0: float = 1.0):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=100)
    if name == "sine":
        return Sine(1.0)
    raise ValueError(f"field.activation: unknown {name!r}")


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int, activation: str = "relu") -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` then a linear output."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), _activation(activation)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class SirenLayer(nn.Module):
    """sin(omega_0 (W x + b)) with the SIREN initialisation (Sitzmann et al. 2020).

    First layer: W ~ U(-1/n, 1/n); hidden layers: W ~ U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0).
    """

    def __init__(self, in_dim: int, out_dim: int, omega0: float, first: bool):
        super().__init__()
        self.omega0 = omega0
        self.linear = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / omega0
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x):
        return torch.sin(self.omega0 * self.linear(x))


def siren(in_dim: int, hidden: int, layers: int, out_dim: int, omega0: float = 30.0) -> nn.Sequential:
    """SIREN trunk: ``layers`` sine layers (the first with omega_0) and a linear output.

    Hidden layers use omega_0 = 30 too, with weights scaled by 1/omega_0 (the published scheme).
    """
    mods: list[nn.Module] = [SirenLayer(in_dim, hidden, omega0, first=True)]
    for _ in range(layers - 1):
        mods.append(SirenLayer(hidden, hidden, 30.0, first=False))
    last = nn.Linear(hidden, out_dim)
    with torch.no_grad():
        bound = math.sqrt(6.0 / hidden) / 30.0
        last.weight.uniform_(-bound, bound)
    mods.append(last)
    return nn.Sequential(*mods)


class _FieldBase(nn.Module):
    def __init__(self, cfg: MapperConfig):
        super().__init__()
        fc = cfg.field
        self.encoding = position_encoding(cfg.encoding, seed=cfg.train.seed)
        self.include_xyz = fc.include_xyz
        self.xyz_scale = 1.0 / cfg.encoding.hash_extent_m
        in_dim = self.encoding.out_dim + (3 if self.include_xyz else 0)
        self.n_geo = fc.geo_features
        if fc.trunk == "siren":
            self.trunk = siren(in_dim, fc.hidden, fc.layers, 1 + self.n_geo, fc.siren_omega0)
        else:
            self.trunk = mlp(in_dim, fc.hidden, fc.layers, 1 + self.n_geo, fc.activation)
        self.dir_enc = direction_encoding(cfg.encoding)
        self.reflective = fc.color_head == "reflective"
        if self.reflective:
            self.color_head = ReflectiveColorHead(self.n_geo, fc.color_hidden, cfg.encoding.sh_degree)
        else:
            self.color_head = mlp(self.n_geo + self.dir_enc.out_dim, fc.color_hidden, 1, 3, "relu")

    def features(self, pts_W: torch.Tensor) -> torch.Tensor:  # (N, 3) -> (N, D)
        e = self.encoding(pts_W)
        if self.include_xyz:
            e = torch.cat([e, pts_W * self.xyz_scale], dim=-1)
        return e

    def color(self, geo: torch.Tensor, dirs_W: torch.Tensor, pts_W: torch.Tensor | None = None,
              normal: torch.Tensor | None = None) -> torch.Tensor:  # (N,G),(N,3) -> (N,3)
        """Colour seen along unit dirs_W. The reflective head reflects dirs_W about ``normal``, else
        about :meth:`normal` at ``pts_W``, else about -dirs_W (head-on); the plain head ignores both."""
        if not self.reflective:
            return torch.sigmoid(self.color_head(torch.cat([geo, self.dir_enc(dirs_W)], dim=-1)))
        if normal is None:
            normal = self.normal(pts_W) if pts_W is not None else -dirs_W
        return self.color_head(geo, dirs_W, normal)

    def normal(self, pts_W: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """Unit outward normals (N, 3): grad sdf / |grad sdf|, or -grad density / |grad density|
        (Ref-NeRF); detached unless ``create_graph``. Works under no_grad (rendering)."""
        frozen = nullcontext() if create_graph else hashgrid_ext.no_table_grad()
        with torch.enable_grad(), frozen:
            p = pts_W if create_graph and pts_W.requires_grad else pts_W.detach().requires_grad_(True)
            h0 = self.trunk(self.features(p))[:, 0]  # density = trunc_exp(h0): the same direction
            if getattr(self, "prior", None) is not None:
                h0 = h0 + self.prior(p)
            (g,) = torch.autograd.grad(h0.sum(), p, create_graph=create_graph)
        n = F.normalize(g, dim=-1)
        return n if self.kind == "sdf" else -n

    def encoding_parameters(self):
        return list(self.encoding.parameters())

    def network_parameters(self):
        enc = {id(p) for p in self.encoding.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]


class SdfField(_FieldBase):
    """pts_W (N, 3) -> signed distance (m), geometry features, optional colour.

    The SDF output starts at +truncation everywhere (empty space), so space that training has
    not reached yet holds no zero crossing: no phantom surfaces in the mesh of a young map.
    With ``prior.enabled`` the output is the network plus the fused TSDF prior
    (:mod:`neural_mapping.sdf_prior`: ``sdf = h + q``), which starts as the prior where it was fused.
    """

    kind = "sdf"

    def __init__(self, cfg: MapperConfig):
        super().__init__(cfg)
        self.prior = SdfPrior.from_config(cfg) if cfg.prior.enabled else None
        with torch.no_grad():
            self.trunk[-1].bias[0].fill_(cfg.train.truncation_m)
            if self.prior is not None:  # the residual starts at exactly h0: the untrained field is the prior
                self.trunk[-1].weight[0].zero_()

    def forward(self, pts_W: torch.Tensor, dirs_W: torch.Tensor | None = None) -> FieldOutput:
        h = self.trunk(self.features(pts_W))
        sdf, geo = h[:, 0], h[:, 1:]
        if self.prior is not None:
            sdf = sdf + self.prior(pts_W)
        col = self.color(geo, dirs_W, pts_W) if dirs_W is not None else None
        return FieldOutput(sdf, geo, col)


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with its input clamped to 15 (keeps densities finite)."""
    return torch.exp(torch.clamp(x, max=15.0))


class RadianceField(_FieldBase):
    """pts_W (N, 3) -> density (1/m) via trunc_exp, view-dependent colour."""

    kind = "nerf"

    def __init__(self, cfg: MapperConfig):
        super().__init__(cfg)
        with torch.no_grad():  # start nearly empty: density exp(-1) ~ 0.37 per metre
            self.trunk[-1].bias[0].fill_(-1.0)

    def forward(self, pts_W: torch.Tensor, dirs_W: torch.Tensor | None = None) -> FieldOutput:
        h = self.trunk(self.features(pts_W))
        density, geo = trunc_exp(h[:, 0]), h[:, 1:]
        col = self.color(geo, dirs_W, pts_W) if dirs_W is not None else None
        return FieldOutput(density, geo, col)


def build_field(cfg: MapperConfig) -> _FieldBase:
    if cfg.field.kind == "sdf":
        return SdfField(cfg)
    if cfg.field.kind == "nerf":
        return RadianceField(cfg)
    raise ValueError(f"field.kind: unknown {cfg.field.kind!r}")
