"""Input encodings: one tiny interface (``in_dim``, ``out_dim``, ``forward(x)``).

- ``FourierEncoding``: NeRF positional encoding, input included.
- ``GaussianEncoding``: random Fourier features (Tancik et al.) with std ``sigma``.
- ``HashGridEncoding``: multiresolution hash encoding (Instant-NGP) in absolute metres,
  pure PyTorch, trilinear, with a custom autograd Function whose backward uses
  ``index_add_`` (measured 2.3x faster than embedding backward on CPU).
- ``SHEncoding``: real spherical harmonics up to degree 4, for unit view directions.
- ``IdentityEncoding``: ``none``.
- ``spline``: the cubic B-spline grid of :mod:`neural_mapping.spline_encoding` (C2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from neural_mapping import hashgrid_ext
from neural_mapping.config import EncodingConfig


class Encoding(nn.Module):
    """Base: ``forward(x (N, in_dim)) -> (N, out_dim)``."""

    in_dim: int
    out_dim: int


class IdentityEncoding(Encoding):
    def __init__(self, in_dim: int = 3):
        super().__init__()
        self.in_dim = self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FourierEncoding(Encoding):
    """[x, sin(2^k pi x), cos(2^k pi x)] for k = 0..L-1; out_dim = in_dim * (1 + 2L)."""

    def __init__(self, in_dim: int = 3, n_freqs: int = 8, scale: float = 1.0):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim * (1 + 2 * n_freqs)
        self.scale = float(scale)  # x is multiplied by this first (1/m -> unitless)
        self.register_buffer("freqs", (2.0 ** torch.arange(n_freqs, dtype=torch.float32)) * math.pi, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, D(1+2L))
        xs = x * self.scale
        xf = (xs[:, :, None] * self.freqs).reshape(x.shape[0], -1)  # (N, D*L)
        return torch.cat([xs, torch.sin(xf), torch.cos(xf)], dim=-1)


class GaussianEncoding(Encoding):
    """Random Fourier features [sin(2 pi x B), cos(2 pi x B)], B ~ N(0, sigma^2); out_dim = 2m."""

    def __init__(self, in_dim: int = 3, n_features: int = 128, sigma: float = 4.0, seed: int = 0):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * n_features
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(in_dim, n_features, generator=g) * sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, 2m)
        proj = 2 * math.pi * (x @ self.B)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


# ----------------------------------------------------------------------------- hash grid

_PRIMES = (1, 2654435761, 805459861)


class _GatherInterp(torch.autograd.Function):
    """out[n, l, :] = sum_c w[n, l, c] * table[idx[n, l, c], :].

    table (L*T, F), idx (N, L, 8) long, w (N, L, 8) -> (N, L, F).
    The backward scatters with ``bincount`` (or ``index_add`` when a graph of the backward is
    being built, so eikonal losses can differentiate it); no embedding backward.
    """

    @staticmethod
    def forward(ctx, table, idx, w):
        N, L, C = idx.shape
        g = table.index_select(0, idx.reshape(-1)).view(N, L, C, -1)  # (N, L, 8, F)
        out = torch.einsum("nlc,nlcf->nlf", w, g)
        ctx.save_for_backward(table, idx, w)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out (N, L, F)
        table, idx, w = ctx.saved_tensors
        grad_table = grad_w = None
        if ctx.needs_input_grad[0]:
            src = (w[..., None] * grad_out[:, :, None, :]).reshape(-1, table.shape[1])  # (N*L*8, F)
            flat = idx.reshape(-1)
            if torch.is_grad_enabled():  # double backward: keep the scatter differentiable
                grad_table = torch.zeros_like(table).index_add(0, flat, src)
            else:  # bincount: measured ~4x faster than index_add_ on CPU
                M = table.shape[0]
                grad_table = torch.stack([torch.bincount(flat, src[:, j], minlength=M) for j in range(src.shape[1])], 1)
                grad_table = grad_table.to(table.dtype)
        if ctx.needs_input_grad[2]:
            N, L, C = idx.shape
            g = table.index_select(0, idx.reshape(-1)).view(N, L, C, -1)
            grad_w = torch.einsum("nlcf,nlf->nlc", g, grad_out)
        return grad_table, None, grad_w


def grid_levels(n_levels: int, table_size: int, base_res: int, finest_m: float,
                extent_m: float) -> tuple[list[float], int, int]:
    """The levels of a multiresolution grid (hash grid, spline grid): cell sizes (m) geometric from
    ``extent_m / base_res`` to ``finest_m``; the periodic resolution R of a dense level (R^3 <= table
    rows); and how many leading (coarse) levels are dense (collision-free over ``extent_m``)."""
    coarse = extent_m / base_res
    if n_levels == 1:
        cells = [finest_m]
    else:
        growth = (finest_m / coarse) ** (1.0 / (n_levels - 1))
        cells = [coarse * growth**l for l in range(n_levels)]
    dense_res = int(round(table_size ** (1.0 / 3.0)))
    while dense_res**3 > table_size:
        dense_res -= 1
    n_dense = sum(1 for c in cells if dense_res * c >= extent_m)
    return cells, dense_res, n_dense


def grid_table(rows: int, n_features: int, seed: int) -> nn.Parameter:
    """A grid's feature table, uniform in +-1e-4 from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return nn.Parameter((torch.rand(rows, n_features, generator=g) * 2 - 1) * 1e-4)


_triton_mod: list = []


def _triton_path():
    """neural_mapping.hashgrid_triton when Triton imports and the path is enabled, else None (imported
    lazily, on the first CUDA tensor: CPU runs never import Triton)."""
    if not _triton_mod:
        from neural_mapping import hashgrid_triton

        _triton_mod.append(hashgrid_triton)
    return _triton_mod[0] if _triton_mod[0].available() else None


class HashGridEncoding(Encoding):
    """Multiresolution hash encoding with levels in absolute metres.

    Level l has cell size ``cell[l]``, geometric from ``extent_m / base_res`` (coarsest) to
    ``finest_m`` (finest). Coarse levels whose periodic dense grid of ``R^3 <= T`` cells spans
    at least ``extent_m`` index a dense grid (coordinates modulo R, collision-free over R cells);
    finer levels use the spatial hash of Teschner et al. Both are defined for every point in
    space, so the mapped region can grow without re-allocating.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table: int = 17, base_res: int = 16,
                 finest_m: float = 0.02, extent_m: float = 8.0, seed: int = 0, fast_cpu_kernel: bool = True):
        super().__init__()
        self.in_dim = 3
        self.n_levels = n_levels
        self.n_features = n_features
        self.out_dim = n_levels * n_features
        self.table_size = 1 << log2_table
        cells, self.dense_res, self.n_dense = grid_levels(n_levels, self.table_size, base_res, finest_m, extent_m)
        self.register_buffer("inv_cell", torch.tensor([1.0 / c for c in cells], dtype=torch.float32))
        self.table = grid_table(n_levels * self.table_size, n_features, seed)
        #: on CPU tensors, use the fused C++ kernel of neural_mapping.hashgrid_ext when it is built
        self.fast_cpu_kernel = fast_cpu_kernel
        self.register_buffer("level_offset", torch.arange(n_levels, dtype=torch.long) * self.table_size, persistent=False)
        self.register_buffer("offsets01", torch.tensor([0, 1], dtype=torch.long), persistent=False)
        self.register_buffer("primes", torch.tensor(_PRIMES, dtype=torch.long)[:, None], persistent=False)
        R = self.dense_res
        self.register_buffer("dense_mult", torch.tensor([1, R, R * R], dtype=torch.long)[:, None], persistent=False)

    @property
    def cell_sizes(self) -> torch.Tensor:
        return 1.0 / self.inv_cell

    def _axis_keys(self, i0: torch.Tensor) -> torch.Tensor:
        """Per-axis index terms of both corners of each cell: i0 (N, L, 3) long -> (N, L, 3, 2).

        Dense levels: (i mod R) * R^axis; hashed levels: i * prime[axis]. The table row of a
        corner is the sum (dense) or xor (hashed) of its three terms.
        """
        Ld = self.n_dense
        ii = i0[..., None] + self.offsets01  # (N, L, 3, 2)
        parts = []
        if Ld > 0:
            R = self.dense_res
            parts.append(torch.remainder(ii[:, :Ld], R) * self.dense_mult)
        if Ld < self.n_levels:
            parts.append(ii[:, Ld:] * self.primes)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def corner_rows(self, i0: torch.Tensor) -> torch.Tensor:
        """Table rows (global, level offset included) of the 8 corners: i0 (N, L, 3) -> (N, L, 8).

        Corner c has bits (bx, by, bz) = (c >> 2 & 1, c >> 1 & 1, c & 1).
        """
        k = self._axis_keys(i0)  # (N, L, 3, 2)
        kx, ky, kz = k[:, :, 0, :, None, None], k[:, :, 1, None, :, None], k[:, :, 2, None, None, :]
        Ld = self.n_dense
        rows = []
        if Ld > 0:
            rows.append((kx[:, :Ld] + ky[:, :Ld] + kz[:, :Ld]).flatten(2))
        if Ld < self.n_levels:
            rows.append(((kx[:, Ld:] ^ ky[:, Ld:] ^ kz[:, Ld:]) & (self.table_size - 1)).flatten(2))
        r = rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)
        return r + self.level_offset[None, :, None]

    def encode_with_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached features (N, L*F) and d features / dx (N, L*F, 3) per metre, analytic (fast queries)."""
        if x.device.type == "cuda" and _triton_path() is not None:  # fused Triton pass (hashgrid_triton)
            return _triton_path().encode_with_jacobian(self, x)
        return hashgrid_ext.encode_with_jacobian(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3) metres -> (N, L*F)
        if self.fast_cpu_kernel and x.device.type == "cpu" and hashgrid_ext.available():
            return hashgrid_ext.encode(self, x)  # same math, tested equal in tests/test_hashgrid_ext.py
        if x.device.type == "cuda" and _triton_path() is not None:
            return _triton_path().encode(self, x)  # same math, tested equal in tests/test_hashgrid_triton.py
        N = x.shape[0]
        xs = x[:, None, :].float() * self.inv_cell[None, :, None]  # (N, L, 3) in cells
        x0 = torch.floor(xs)
        f = xs - x0  # (N, L, 3) in [0, 1)
        idx = self.corner_rows(x0.long())  # (N, L, 8)
        wa = torch.stack([1 - f, f], dim=-1)  # (N, L, 3, 2): weight of bit 0 / bit 1 per axis
        w = (wa[:, :, 0, :, None, None] * wa[:, :, 1, None, :, None] * wa[:, :, 2, None, None, :]).flatten(2)
        out = _GatherInterp.apply(self.table, idx, w)  # (N, L, F)
        return out.reshape(N, self.out_dim)


# ----------------------------------------------------------------------------- spherical harmonics

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)
_C4 = (2.5033429417967046, -1.7701307697799304, 0.9461746957575601, -0.6690465435572892, 0.10578554691520431,
       -0.6690465435572892, 0.47308734787878004, -1.7701307697799304, 0.6258357354491761)


class SHEncoding(Encoding):
    """Real spherical harmonics of bands 0..degree for unit directions; out_dim = (degree + 1)^2.

    Orthonormal on the sphere: integral of Y_i Y_j over the sphere = delta_ij.
    """

    def __init__(self, degree: int = 4):
        super().__init__()
        if not 0 <= degree <= 4:
            raise ValueError(f"SH degree must be in 0..4, got {degree}")
        self.degree = degree
        self.in_dim = 3
        self.out_dim = (degree + 1) ** 2

    def forward(self, d: torch.Tensor) -> torch.Tensor:  # (N, 3) unit -> (N, (deg+1)^2)
        x, y, z = d[:, 0], d[:, 1], d[:, 2]
        out = [torch.full_like(x, _C0)]
        if self.degree >= 1:
            out += [-_C1 * y, _C1 * z, -_C1 * x]
        if self.degree >= 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out += [_C2[0] * xy, _C2[1] * yz, _C2[2] * (2 * zz - xx - yy), _C2[3] * xz, _C2[4] * (xx - yy)]
        if self.degree >= 3:
            out += [_C3[0] * y * (3 * xx - yy), _C3[1] * xy * z, _C3[2] * y * (4 * zz - xx - yy),
                    _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy),
                    _C3[5] * z * (xx - yy), _C3[6] * x * (xx - 3 * yy)]
        if self.degree >= 4:
            out += [_C4[0] * xy * (xx - yy), _C4[1] * yz * (3 * xx - yy), _C4[2] * xy * (7 * zz - 1),
                    _C4[3] * yz * (7 * zz - 3), _C4[4] * (zz * (35 * zz - 30) + 3), _C4[5] * xz * (7 * zz - 3),
                    _C4[6] * (xx - yy) * (7 * zz - 1), _C4[7] * xz * (xx - 3 * yy),
                    _C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy))]
        return torch.stack(out, dim=-1)


# ----------------------------------------------------------------------------- factories


def position_encoding(cfg: EncodingConfig, seed: int = 0) -> Encoding:
    """The position encoding selected by ``cfg.kind`` (inputs in metres)."""
    if cfg.kind == "hashgrid":
        return HashGridEncoding(cfg.hash_levels, cfg.hash_features, cfg.hash_log2_table, cfg.hash_base_res,
                                cfg.hash_finest_m, cfg.hash_extent_m, seed=seed,
                                fast_cpu_kernel=cfg.fast_cpu_kernel)
    if cfg.kind == "fourier":
        # positions in metres: scale so one unit spans the nominal extent
        return FourierEncoding(3, cfg.fourier_freqs, scale=2.0 / cfg.hash_extent_m)
    if cfg.kind == "gaussian":
        return GaussianEncoding(3, cfg.gaussian_features, cfg.gaussian_sigma, seed=seed)
    if cfg.kind == "none":
        return IdentityEncoding(3)
    if cfg.kind == "spline":  # cubic B-spline grid on the hash grid's levels (C2): neural_mapping/spline_encoding.py
        from neural_mapping.spline_encoding import SplineGridEncoding

        return SplineGridEncoding(cfg.hash_levels, cfg.hash_features, cfg.hash_log2_table, cfg.hash_base_res,
                                  cfg.hash_finest_m, cfg.hash_extent_m, seed=seed)
    raise ValueError(f"encoding.kind: unknown {cfg.kind!r}")


def direction_encoding(cfg: EncodingConfig) -> Encoding:
    """The view-direction encoding selected by ``cfg.dir_encoding``."""
    if cfg.dir_encoding == "sh":
        return SHEncoding(cfg.sh_degree)
    if cfg.dir_encoding == "fourier":
        return FourierEncoding(3, 4)
    return IdentityEncoding(3)
