"""Multiresolution cubic B-spline grid encoding: a C2 counterpart of the hash grid.

Each level holds learnable feature coefficients on a lattice of cell size ``cell[l]`` (the
same geometric ladder as :class:`~neural_mapping.encodings.HashGridEncoding`: coarse levels
index a dense periodic grid, fine levels the spatial hash of Teschner et al.). A point is
interpolated with the tensor-product *uniform cubic B-spline*: in each axis the 4 control
points ``i0 - 1 .. i0 + 2`` around its cell ``[i0, i0 + 1)`` weigh in with

    B0 = (1 - t)^3 / 6,  B1 = (3t^3 - 6t^2 + 4) / 6,  B2 = (-3t^3 + 3t^2 + 3t + 1) / 6,  B3 = t^3 / 6,

so 4^3 = 64 coefficients per sample and level. The encoding is C2 (its first and second
derivatives are continuous across cell borders, unlike trilinear interpolation whose
gradient jumps and whose second derivative is zero inside a cell), and it reproduces
polynomials up to degree 2 exactly: coefficients ``p(j) - laplacian(p) / 6`` at the control
points ``j`` give back ``p`` (the quasi-interpolant; the B-spline's variance is 1/3 per axis).

Pure PyTorch, vectorised over points; a loop over levels only (each level gathers its 64
rows at once). Derivatives of any order come from autograd (the weights are polynomials of
the position); a fourfold cost over trilinear's 8 corners per level is the price of C2.
"""

from __future__ import annotations

import torch
from torch import nn

from neural_mapping.encodings import _PRIMES, Encoding, grid_levels, grid_table


def bspline_weights(t: torch.Tensor) -> torch.Tensor:
    """Cubic uniform B-spline weights of the 4 control points around t in [0, 1): (...) -> (..., 4)."""
    t2, t3 = t * t, t * t * t
    return torch.stack([(1 - t) ** 3, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * t + 1, t3], -1) / 6.0


class SplineGridEncoding(Encoding):
    """Multiresolution cubic B-spline grid (see module doc), positions in absolute metres.

    Arguments as :class:`~neural_mapping.encodings.HashGridEncoding` (``encoding.hash_*``):
    ``n_levels`` levels of ``n_features`` features in tables of ``2^log2_table`` rows, cell
    sizes geometric from ``extent_m / base_res`` to ``finest_m``.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table: int = 17, base_res: int = 16,
                 finest_m: float = 0.02, extent_m: float = 8.0, seed: int = 0):
        super().__init__()
        self.in_dim = 3
        self.n_levels = n_levels
        self.n_features = n_features
        self.out_dim = n_levels * n_features
        self.table_size = 1 << log2_table
        #: leading (coarse) levels index a dense periodic grid (collision-free over dense_res cells)
        cells, self.dense_res, self.n_dense = grid_levels(n_levels, self.table_size, base_res, finest_m, extent_m)
        self.register_buffer("inv_cell", torch.tensor([1.0 / c for c in cells], dtype=torch.float64), persistent=False)
        self.table = grid_table(n_levels * self.table_size, n_features, seed)
        self.register_buffer("offsets", torch.arange(-1, 3, dtype=torch.long), persistent=False)  # (4,)
        R = self.dense_res
        self.register_buffer("dense_mult", torch.tensor([1, R, R * R], dtype=torch.long), persistent=False)
        self.register_buffer("primes", torch.tensor(_PRIMES, dtype=torch.long), persistent=False)

    @property
    def cell_sizes(self) -> torch.Tensor:
        return 1.0 / self.inv_cell

    def control_rows(self, i0: torch.Tensor, level: int) -> torch.Tensor:
        """Table rows (level offset included) of the 64 control points: i0 (N, 3) long -> (N, 64).

        Control point (a, b, c) (each in 0..3, offsets -1..2) is column 16 a + 4 b + c.
        """
        ii = i0[:, :, None] + self.offsets  # (N, 3, 4)
        if level < self.n_dense:
            k = torch.remainder(ii, self.dense_res) * self.dense_mult[:, None]
            rows = k[:, 0, :, None, None] + k[:, 1, None, :, None] + k[:, 2, None, None, :]
        else:
            k = ii * self.primes[:, None]
            rows = (k[:, 0, :, None, None] ^ k[:, 1, None, :, None] ^ k[:, 2, None, None, :]) & (self.table_size - 1)
        return rows.flatten(1) + level * self.table_size

    def level_values(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Interpolated features (N, F) of one level at points x (N, 3) in metres."""
        xs = x.to(self.table.dtype) * self.inv_cell[level].to(self.table.dtype)
        x0 = torch.floor(xs)
        w1 = bspline_weights(xs - x0)  # (N, 3, 4)
        w = (w1[:, 0, :, None, None] * w1[:, 1, None, :, None] * w1[:, 2, None, None, :]).flatten(1)  # (N, 64)
        rows = self.control_rows(x0.long(), level)
        g = self.table.index_select(0, rows.reshape(-1)).view(x.shape[0], 64, self.n_features)
        return torch.einsum("nc,ncf->nf", w, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3) metres -> (N, L*F)
        return torch.cat([self.level_values(x, l) for l in range(self.n_levels)], dim=-1)

    @torch.no_grad()
    def control_points(self, level: int) -> torch.Tensor:
        """Lattice coordinates (T, 3) in cells of each row of a dense level's table (the periodic cube)."""
        if level >= self.n_dense:
            raise ValueError(f"level {level} is hashed: its rows have no single lattice point")
        R = self.dense_res
        r = torch.arange(R**3)
        return torch.stack([r % R, (r // R) % R, r // (R * R)], -1)
