"""The fused CPU hash-grid kernel against the pure-PyTorch reference (HashGridEncoding)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from neural_mapping import hashgrid_ext as hx
from neural_mapping.encodings import HashGridEncoding

needs_ext = pytest.mark.skipif(not hx.available(), reason=f"hash-grid CPU kernel unavailable: {hx.unavailable_reason()}")

# (levels, features, log2 table, base_res, finest_m, extent_m): mixed dense/hashed, all hashed,
# all dense, one level, odd feature count (generic kernel path), 4 features
CONFIGS = [
    (16, 2, 17, 16, 0.02, 8.0),
    (4, 2, 10, 64, 0.01, 8.0),
    (3, 2, 15, 2, 0.5, 4.0),
    (1, 2, 12, 16, 0.05, 8.0),
    (5, 3, 12, 8, 0.05, 8.0),
    (6, 4, 14, 16, 0.03, 6.0),
]


def make(cfg, seed=0, scale=0.5) -> HashGridEncoding:
    L, F, log2T, base, finest, extent = cfg
    enc = HashGridEncoding(L, F, log2T, base, finest, extent, seed=seed)
    enc.fast_cpu_kernel = False  # the reference path, whatever the integration default
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # table values of order one so differences are visible
        enc.table.copy_((torch.rand(enc.table.shape, generator=g) * 2 - 1) * scale)
    return enc


def points(n, seed=0, lo=-7.0, hi=9.0) -> torch.Tensor:
    """Random points (n, 3) in metres, negative and beyond the nominal extent included."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * (hi - lo) + lo


def fast(enc, x):
    return hx.hashgrid_encode(x, enc.table, hx.GridSpec.of(enc))


def close(a, b, tol):
    """|a - b| <= tol * max(1, max|b|), elementwise."""
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} > {tol:g} x {scale:.3g}"


@needs_ext
@pytest.mark.parametrize("cfg", CONFIGS)
def test_forward_matches_reference(cfg):
    enc = make(cfg)
    x = points(4000)
    ref = enc(x)
    out = fast(enc, x)
    assert out.shape == (4000, enc.out_dim) and out.dtype == torch.float32
    close(out, ref, 1e-5)


@needs_ext
@pytest.mark.parametrize("cfg", CONFIGS)
def test_table_and_input_gradients_match_reference(cfg):
    enc = make(cfg)
    x = points(3000, seed=1)
    g = torch.randn(3000, enc.out_dim, generator=torch.Generator().manual_seed(2))
    xr = x.clone().requires_grad_()
    gt_ref, gx_ref = torch.autograd.grad(enc(xr), [enc.table, xr], g)
    xf = x.clone().requires_grad_()
    gt, gx = torch.autograd.grad(fast(enc, xf), [enc.table, xf], g)
    close(gt, gt_ref, 1e-4)
    close(gx, gx_ref, 1e-4)
    assert gt_ref.abs().sum() > 0 and gx_ref.abs().sum() > 0


@needs_ext
def test_scatter_is_deterministic_and_sums_weights():
    enc = make(CONFIGS[0])
    x = points(5000, seed=3)
    g = torch.ones(5000, enc.out_dim)
    spec = hx.GridSpec.of(enc)
    ext = hx.load()
    a = ext.scatter(x, g, None, enc.table.shape[0], *spec.args())
    b = ext.scatter(x, g, None, enc.table.shape[0], *spec.args())
    assert torch.equal(a, b)
    # with g = 1, each point spreads weight 1 over its 8 corners per level: every level sums to N
    per_level = a[:, 0].view(enc.n_levels, -1).sum(1)
    assert torch.allclose(per_level, torch.full((enc.n_levels,), 5000.0), rtol=1e-5)


def _autograd_jacobian(enc, x):
    """(N, L*F, 3) by one backward pass per output column of the reference."""
    x = x.clone().requires_grad_()
    y = enc(x)
    cols = []
    for k in range(y.shape[1]):
        (gk,) = torch.autograd.grad(y[:, k].sum(), x, retain_graph=True)
        cols.append(gk)
    return y.detach(), torch.stack(cols, dim=1)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[4]])
def test_reference_jacobian_matches_autograd(cfg, device):
    """The pure-PyTorch analytic jacobian (the CUDA / no-kernel route of encode_with_jacobian)."""
    enc = make(cfg).to(device)
    x = points(300, seed=4).to(device)
    y, J = _autograd_jacobian(enc, x)
    f, Jr = hx.reference_encode_with_jacobian(enc, x)
    close(f, y, 1e-5)
    close(Jr, J, 1e-4)
    f2, J2 = hx.encode_with_jacobian(enc, x)  # kernel switched off (make): the reference route
    assert torch.equal(f2, f) and torch.equal(J2, Jr)
    if device == "cuda":  # the kernel switch never sends CUDA tensors to the CPU kernel
        enc.fast_cpu_kernel = True
        assert torch.equal(enc(x), y.to(device))
        f3, J3 = hx.encode_with_jacobian(enc, x)
        assert f3.device.type == "cuda" and torch.equal(J3, Jr)


@needs_ext
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[4], CONFIGS[5]])
def test_kernel_jacobian_matches_autograd(cfg):
    enc = make(cfg)
    x = points(300, seed=5)
    y, J = _autograd_jacobian(enc, x)
    enc.fast_cpu_kernel = True
    f, Jk = hx.load().forward_jac(x, enc.table.detach(), *hx.GridSpec.of(enc).args())
    enc.fast_cpu_kernel = True  # the public entry takes the kernel on CPU
    f2, Jk2 = hx.encode_with_jacobian(enc, x)
    assert torch.equal(f2, f) and torch.equal(Jk2, Jk)
    assert Jk.shape == (300, enc.out_dim, 3)
    close(f, y, 1e-5)
    close(Jk, J, 1e-4)
    # a field gradient formed from the jacobian equals autograd of the reference
    g = torch.randn(300, enc.out_dim, generator=torch.Generator().manual_seed(6))
    enc.fast_cpu_kernel = False
    xr = x.clone().requires_grad_()
    (gx_ref,) = torch.autograd.grad(enc(xr), xr, g)
    close(torch.einsum("nk,nka->na", g, Jk), gx_ref, 1e-4)


@needs_ext
def test_jacobian_matches_finite_differences():
    """Independent of both implementations: central differences inside a cell (float64 table)."""
    enc = make((2, 2, 12, 4, 0.25, 2.0))
    x = torch.tensor([[0.13, 0.41, -0.27], [1.06, -0.77, 0.52]])
    _, J = hx.load().forward_jac(x, enc.table.detach(), *hx.GridSpec.of(enc).args())
    h = 1e-3  # cells are >= 0.25 m; these points are > 1 cm from every cell face
    for a in range(3):
        e = torch.zeros(3)
        e[a] = h
        fd = (fast(enc, x + e).double() - fast(enc, x - e).double()) / (2 * h)
        assert torch.allclose(J[:, :, a].double(), fd, atol=2e-3), a


@needs_ext
def test_vertices_return_table_rows_exactly():
    """At a grid vertex the trilinear weights are (1, 0, ..., 0): features = the vertex's row."""
    enc = make((1, 2, 12, 16, 0.05, 8.0))  # one hashed level, cell 5 cm
    ijk = torch.tensor([[3, -7, 11], [0, 0, 0], [-20, 5, 2]], dtype=torch.long)
    x = ijk.float() / enc.inv_cell[0]
    T = enc.table_size
    rows = [((int(i) * 1) ^ (int(j) * 2654435761) ^ (int(k) * 805459861)) & (T - 1) for i, j, k in ijk.tolist()]
    expect = enc.table.detach()[rows]
    out = fast(enc, x)
    # x * inv_cell may land a hair below the vertex; allow the interpolation's tiny spill
    assert torch.allclose(out, expect, atol=1e-5)


@needs_ext
def test_double_backward_eikonal_matches_reference():
    """Eikonal loss through grad_x: gradients w.r.t. the table and an MLP equal the reference's."""
    enc = make((8, 2, 12, 8, 0.05, 4.0))
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(enc.out_dim, 32), torch.nn.Softplus(beta=10), torch.nn.Linear(32, 1))
    x0 = points(1500, seed=7, lo=-2.0, hi=2.0)

    def grads(encode):
        x = x0.clone().requires_grad_()
        sdf = head(encode(x))[:, 0]
        (gx,) = torch.autograd.grad(sdf.sum(), x, create_graph=True)
        loss = ((gx.norm(dim=-1) - 1.0) ** 2).mean() + (sdf**2).mean()
        return torch.autograd.grad(loss, [enc.table, *head.parameters()])

    ref = grads(enc)
    new = grads(lambda x: fast(enc, x))
    for a, b in zip(new, ref):
        close(a, b, 1e-4)
    assert ref[0].abs().sum() > 0


@needs_ext
def test_bad_input_is_refused_with_a_clear_message():
    enc = make(CONFIGS[3])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        fast(enc, torch.zeros(5, 2))
    ext = hx.load()
    with pytest.raises(RuntimeError, match="L\\*T"):
        ext.forward(torch.zeros(4, 3), torch.zeros(10, 2), enc.inv_cell, enc.table_size, 0, 16)


def test_disabled_extension_falls_back_with_a_reason():
    code = ("from neural_mapping import hashgrid_ext as h; assert h.load() is None; "
            "print(h.unavailable_reason())")
    env = dict(os.environ, NEURAL_MAPPING_NO_EXT="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "NEURAL_MAPPING_NO_EXT" in r.stdout
    assert "pure-PyTorch" in r.stderr  # the logged warning names the fallback


@needs_ext
def test_mapper_query_fast_path_equals_reference():
    """Mapper.query (sdf, gradient, colour) with the kernel equals the pure-PyTorch path, same weights."""
    from neural_mapping.config import MapperConfig, apply_overrides
    from neural_mapping.mapper import Mapper

    small = {"device": "cpu", "encoding.hash_log2_table": 12, "encoding.hash_levels": 8}
    answers = []
    for fast_on in (False, True):
        torch.manual_seed(0)
        m = Mapper(apply_overrides(MapperConfig(), dict(small, **{"encoding.fast_cpu_kernel": fast_on})))
        enc = m.field.encoding
        assert enc.fast_cpu_kernel is fast_on
        with torch.no_grad():  # same non-trivial table in both mappers
            enc.table.copy_((torch.rand(enc.table.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1) * 0.5)
        pts = points(5000, seed=8, lo=-3.0, hi=4.0).numpy()
        answers.append(m.query(pts, want_gradient=True, want_color=True, chunk=1024))
    ref, new = answers
    close(torch.from_numpy(new.sdf), torch.from_numpy(ref.sdf), 1e-5)
    close(torch.from_numpy(new.gradient), torch.from_numpy(ref.gradient), 1e-4)
    close(torch.from_numpy(new.color), torch.from_numpy(ref.color), 1e-4)
    assert torch.from_numpy(ref.gradient).abs().max() > 0.1


@needs_ext
def test_no_table_grad_keeps_the_table_out_of_the_graph():
    enc = make(CONFIGS[3])
    enc.fast_cpu_kernel = True
    x = points(100, seed=9).requires_grad_()
    with hx.no_table_grad():
        out = enc(x)
    gt, gx = torch.autograd.grad(out.sum(), [enc.table, x], allow_unused=True)
    assert gt is None and gx is not None
    out = enc(x)  # outside the context the table is a leaf of the graph again
    gt, gx2 = torch.autograd.grad(out.sum(), [enc.table, x])
    assert gt.abs().sum() > 0
    close(gx, gx2, 1e-5)  # inside: the jacobian route; outside: the input-gradient kernel
    g = torch.randn(100, enc.out_dim, generator=torch.Generator().manual_seed(10))
    with hx.no_table_grad():
        (gx3,) = torch.autograd.grad(enc(x), x, g)
    (gx4,) = torch.autograd.grad(enc(x), x, g)
    close(gx3, gx4, 1e-5)
    assert gx4.abs().max() > 0.1


@needs_ext
def test_far_and_non_finite_points_match_reference_without_crashing():
    """Coordinates past 2^31 cells take the 64-bit modulo path; NaN stays NaN, rows stay in range."""
    enc = make(CONFIGS[0])
    x = torch.tensor([[1.0e6, -2.5e6, 3.0e5], [3.0e9, -4.0e9, 1.0e8], [-7.3e8, 2.2e9, -1.5e9], [0.3, 0.2, 0.1]])
    close(fast(enc, x), enc(x), 1e-5)
    bad = torch.tensor([[float("nan"), 0.0, 0.0], [float("inf"), 1.0, 2.0]])
    out = fast(enc, bad)
    assert out.shape == (2, enc.out_dim) and torch.isnan(out[0]).all()


@needs_ext
def test_jacobian_vjp_kernel_matches_batched_product():
    """jac_vjp reads the first K columns of a wider, row-strided g (a trunk's [features, xyz] gradient)."""
    enc = make(CONFIGS[0])
    x = points(3000, seed=11)
    _, J = hx.load().forward_jac(x, enc.table.detach(), *hx.GridSpec.of(enc).args())
    g = torch.randn(3000, enc.out_dim + 3, generator=torch.Generator().manual_seed(12))
    ref = torch.einsum("nk,nka->na", g[:, :enc.out_dim].double(), J.double()).float()
    out = hx.jacobian_vjp(J, g, enc.out_dim)
    close(out, ref, 1e-5)
    close(hx.load().jac_vjp(J, g[:, :enc.out_dim].contiguous()), ref, 1e-5)
    assert ref.abs().max() > 1.0
    ref_xyz = ref + 0.125 * g[:, enc.out_dim:enc.out_dim + 3]  # + the raw-xyz inputs' part, scaled
    close(hx.jacobian_vjp(J, g, enc.out_dim, xyz_scale=0.125), ref_xyz, 1e-5)
    close(hx.jacobian_vjp(J.double(), g.double(), enc.out_dim, xyz_scale=0.125).float(), ref_xyz, 1e-5)  # bmm
    with pytest.raises(RuntimeError, match="unit column stride"):
        hx.load().jac_vjp(J, g.t().contiguous().t())
