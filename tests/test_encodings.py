import math

import numpy as np
import pytest
import torch

from neural_mapping.config import EncodingConfig
from neural_mapping.encodings import (FourierEncoding, GaussianEncoding, HashGridEncoding, IdentityEncoding,
                                      SHEncoding, direction_encoding, position_encoding)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("kind,out_dim", [("hashgrid", 16 * 2), ("fourier", 3 * (1 + 2 * 8)),
                                          ("gaussian", 2 * 128), ("none", 3)])
def test_position_encodings_out_dim_and_gradient_flow(kind, out_dim):
    enc = position_encoding(EncodingConfig(kind=kind, hash_log2_table=12))
    assert enc.in_dim == 3 and enc.out_dim == out_dim
    x = (torch.rand(50, 3) * 4 - 2).requires_grad_(True)
    y = enc(x)
    assert y.shape == (50, out_dim)
    (y * torch.randn(50, out_dim, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in enc.parameters():  # trainable tables receive gradient
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_fourier_values_by_hand():
    enc = FourierEncoding(1, 2)
    y = enc(torch.tensor([[0.25]]))
    # [x, sin(pi x), sin(2 pi x), cos(pi x), cos(2 pi x)]
    want = [0.25, math.sin(math.pi / 4), math.sin(math.pi / 2), math.cos(math.pi / 4), math.cos(math.pi / 2)]
    assert torch.allclose(y[0], torch.tensor(want), atol=1e-6)


def test_gaussian_features_are_unit_norm_pairs():
    enc = GaussianEncoding(3, 16, sigma=2.0)
    y = enc(torch.randn(10, 3))
    s, c = y[:, :16], y[:, 16:]
    assert torch.allclose(s**2 + c**2, torch.ones(10, 16), atol=1e-5)


def test_sh_out_dims_and_orthonormality():
    for deg, n in [(0, 1), (1, 4), (2, 9), (3, 16), (4, 25)]:
        assert SHEncoding(deg).out_dim == n
    assert direction_encoding(EncodingConfig(sh_degree=4)).out_dim == 25
    g = torch.Generator().manual_seed(0)
    d = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    Y = SHEncoding(4)(d)  # (N, 25)
    gram = 4 * math.pi * (Y.T @ Y) / d.shape[0]  # Monte-Carlo integral over the sphere
    assert torch.allclose(gram, torch.eye(25, dtype=torch.float64), atol=0.03)


@pytest.mark.parametrize("device", DEVICES)
def test_hashgrid_exact_at_grid_vertices(device):
    enc = HashGridEncoding(n_levels=4, n_features=2, log2_table=10, base_res=4, finest_m=0.1, extent_m=2.0).to(device)
    with torch.no_grad():
        enc.table.normal_()
    assert 0 < enc.n_dense < enc.n_levels  # both the dense and the hashed path are exercised
    cells = enc.cell_sizes.cpu()
    ijk = torch.tensor([[0, 0, 0], [3, -2, 5], [-7, 11, 1], [20, 20, -20]], dtype=torch.long)
    for l in range(enc.n_levels):
        x = (ijk.double() * cells[l].double()).float().to(device)  # vertices of level l
        y = enc(x).view(len(ijk), enc.n_levels, 2)[:, l]
        rows = enc.corner_rows(ijk.to(device)[:, None, :].expand(-1, enc.n_levels, 3).contiguous())[:, l, 0]
        assert torch.allclose(y, enc.table[rows], atol=1e-5), f"level {l}"


def test_hashgrid_trilinear_between_vertices():
    enc = HashGridEncoding(n_levels=1, n_features=1, log2_table=12, base_res=4, finest_m=0.5, extent_m=2.0)
    with torch.no_grad():
        enc.table.normal_()
    corner = torch.tensor([[1, 2, 3]])
    rows = enc.corner_rows(corner[:, None, :])[0, 0]  # the 8 corners, bits (bx, by, bz)
    vals = enc.table[rows, 0].detach()
    f = torch.tensor([0.2, 0.7, 0.4])
    x = ((corner[0].float() + f) * 0.5)[None]
    want = 0.0
    for c in range(8):
        b = [(c >> 2) & 1, (c >> 1) & 1, c & 1]
        w = np.prod([f[a].item() if b[a] else 1 - f[a].item() for a in range(3)])
        want += w * vals[c].item()
    assert enc(x).item() == pytest.approx(want, abs=1e-5)


def test_hashgrid_levels_in_metres_and_defined_everywhere():
    enc = HashGridEncoding(n_levels=16, log2_table=14, base_res=16, finest_m=0.02, extent_m=8.0)
    cells = enc.cell_sizes
    assert cells[0].item() == pytest.approx(0.5, rel=1e-5)
    assert cells[-1].item() == pytest.approx(0.02, rel=1e-5)
    far = torch.tensor([[1e3, -2e3, 5e2]])  # far outside the nominal extent: still finite
    assert torch.isfinite(enc(far)).all()


def test_hashgrid_double_backward_for_eikonal():
    enc = HashGridEncoding(n_levels=3, log2_table=10, finest_m=0.1, extent_m=2.0)
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(20, 3).requires_grad_(True)
    y = enc(x).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    g.square().sum().backward()
    assert enc.table.grad is not None and enc.table.grad.abs().sum() > 0


def test_hashgrid_backward_matches_autograd_reference():
    enc = HashGridEncoding(n_levels=3, n_features=2, log2_table=8, finest_m=0.1, extent_m=2.0)
    x = torch.rand(100, 3) * 3
    gout = torch.randn(100, 6)
    (enc(x) * gout).sum().backward()
    mine = enc.table.grad.clone()
    # reference: plain autograd through indexing
    xs = x[:, None, :] * enc.inv_cell[None, :, None]
    x0 = torch.floor(xs)
    f = xs - x0
    idx = enc.corner_rows(x0.long())
    wa = torch.stack([1 - f, f], -1)
    w = (wa[:, :, 0, :, None, None] * wa[:, :, 1, None, :, None] * wa[:, :, 2, None, None, :]).flatten(2)
    t2 = enc.table.detach().clone().requires_grad_(True)
    ref = (w[..., None] * t2[idx]).sum(2).reshape(100, -1)
    (ref * gout).sum().backward()
    assert torch.allclose(mine, t2.grad, atol=1e-5)


def test_identity():
    e = IdentityEncoding(3)
    x = torch.randn(4, 3)
    assert e.out_dim == 3 and torch.equal(e(x), x)
