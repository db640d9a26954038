"""The cubic B-spline grid encoding: polynomial reproduction, C2 continuity, gradients, training."""

import numpy as np
import torch

from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.encodings import position_encoding
from neural_mapping.spline_encoding import SplineGridEncoding, bspline_weights

CELL = 0.1  # m, the single level of the analytic tests


def one_level(dtype=torch.float64) -> SplineGridEncoding:
    enc = SplineGridEncoding(n_levels=1, n_features=1, log2_table=12, finest_m=CELL, extent_m=1.0).to(dtype)
    assert enc.n_dense == 1 and enc.dense_res == 16
    return enc


def quadratic(p):  # in cells
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return 0.3 + 0.2 * x - 0.1 * y + 0.05 * z + 0.01 * x * x - 0.02 * y * y + 0.015 * z * z + 0.01 * x * y - 0.005 * y * z


def test_weights_partition_unity_and_are_positive():
    t = torch.rand(100, dtype=torch.float64)
    w = bspline_weights(t)
    assert torch.allclose(w.sum(-1), torch.ones_like(t)) and bool((w >= 0).all())


def test_reproduces_a_quadratic_exactly():
    enc = one_level()
    j = enc.control_points(0).to(torch.float64)  # (R^3, 3) lattice points of the table rows
    lap = 2 * (0.01 - 0.02 + 0.015)
    with torch.no_grad():  # quasi-interpolant: c_j = p(j) - laplacian(p) / 6
        enc.table.zero_()
        enc.table[: len(j), 0] = quadratic(j) - lap / 6.0
    g = torch.Generator().manual_seed(0)
    p_cells = 1.0 + torch.rand(500, 3, generator=g, dtype=torch.float64) * (enc.dense_res - 3.0)  # no wrap-around
    got = enc(p_cells * CELL)[:, 0]
    assert torch.allclose(got, quadratic(p_cells), atol=1e-9), (got - quadratic(p_cells)).abs().max()


def _derivs(enc, p):
    p = p.clone().requires_grad_(True)
    v = enc(p)[:, 0].sum()
    (g,) = torch.autograd.grad(v, p, create_graph=True)
    h = torch.stack([torch.autograd.grad(g[:, a].sum(), p, retain_graph=True)[0] for a in range(3)], 1)
    return g.detach(), h.detach()


def test_first_and_second_derivatives_continuous_across_cell_borders():
    enc = one_level()
    with torch.no_grad():
        enc.table.normal_(generator=torch.Generator().manual_seed(1))  # a rough random field
    g = torch.Generator().manual_seed(2)
    p = (3.0 + torch.rand(64, 3, generator=g, dtype=torch.float64) * 8.0) * CELL
    for axis in range(3):
        p[:, axis] = torch.floor(p[:, axis] / CELL) * CELL  # on a border along this axis
        eps = torch.zeros(3, dtype=torch.float64)
        eps[axis] = 1e-7 * CELL
        gl, hl = _derivs(enc, p - eps)
        gr, hr = _derivs(enc, p + eps)
        scale_g, scale_h = gl.abs().max(), hl.abs().max()
        assert scale_h > 0 and (gl - gr).abs().max() < 1e-5 * scale_g
        assert (hl - hr).abs().max() < 1e-4 * scale_h, (hl - hr).abs().max() / scale_h


def test_gradients_flow_to_the_coefficients_of_every_level():
    enc = SplineGridEncoding(n_levels=4, n_features=2, log2_table=10, base_res=4, finest_m=0.05, extent_m=2.0)
    assert 0 < enc.n_dense < 4  # both dense and hashed levels
    x = torch.rand(200, 3) * 2 - 1
    enc(x).square().sum().backward()
    per_level = enc.table.grad.view(4, -1).abs().sum(1)
    assert bool((per_level > 0).all())
    # the second derivative reaches them too (an eikonal loss on a Laplacian can train them)
    enc.table.grad = None
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(enc(x)[:, 0].sum(), x, create_graph=True)
    g.square().sum().backward()
    assert enc.table.grad.abs().sum() > 0


def test_selectable_and_a_field_trains_on_a_tiny_scene():
    from analytic_scenes import sphere_frames

    from neural_mapping.mapper import Mapper

    cfg = apply_overrides(MapperConfig(), {
        "device": "cpu", "encoding.kind": "spline", "encoding.hash_levels": 4, "encoding.hash_log2_table": 12,
        "encoding.hash_finest_m": 0.08, "train.rays_per_step": 256, "render.n_stratified": 6,
        "render.n_surface": 6, "field.hidden": 32})
    assert isinstance(position_encoding(cfg.encoding), SplineGridEncoding)
    torch.manual_seed(0)
    frames, _ = sphere_frames(n=6, H=24, W=32)
    m = Mapper(cfg)
    for f in frames:
        m.add_frame(f)
    m.step(3)
    first = m.stats.last_loss
    m.step(40)
    assert np.isfinite(m.stats.last_loss) and m.stats.last_loss < 0.5 * first, (first, m.stats.last_loss)
