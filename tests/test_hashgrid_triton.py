"""The fused Triton hash-grid kernels (neural_mapping/hashgrid_triton.py) against the pure-PyTorch
reference (HashGridEncoding with the CPU kernel off): values, table gradient, input gradient, the
eikonal double backward and the fused jacobian.

Without CUDA the kernels run on CPU tensors through Triton's interpreter: TRITON_INTERPRET=1 must be
set before the kernels are defined, so it is set here at import, before neural_mapping.hashgrid_triton
is imported (nothing imports it on a CPU run otherwise). With CUDA the compiled kernels run on the GPU
(benchmarks/device_check.sh runs this file there). Skipped, with the reason, where Triton does not
import.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA and "neural_mapping.hashgrid_triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton.jit decorates the kernels

from neural_mapping import hashgrid_ext as hx  # noqa: E402
from neural_mapping import hashgrid_triton as ht  # noqa: E402
from neural_mapping.encodings import HashGridEncoding  # noqa: E402

try:
    import triton  # noqa: F401

    NO_TRITON = None
except Exception as e:  # pragma: no cover - depends on the machine
    NO_TRITON = f"triton does not import ({type(e).__name__}: {e}); pip install triton (scripts/setup.sh does)"

INTERPRETED = ht.interpreting()

requires_triton = pytest.mark.skipif(NO_TRITON is not None, reason=NO_TRITON or "")

# which devices the kernels can run on in this process
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(
        not INTERPRETED, reason="Triton's interpreter is off in this process (CUDA present: the compiled kernels are "
                                "tested on 'cuda' instead; or hashgrid_triton was imported before TRITON_INTERPRET=1)")),
    pytest.param("cuda", marks=pytest.mark.skipif(
        not HAS_CUDA or INTERPRETED, reason="no CUDA device" if not HAS_CUDA else "interpreter mode")),
]

# (levels, features, log2 table, base_res, finest_m, extent_m): mixed dense/hashed, all hashed, all
# dense, one level, odd feature count (padded feature block), 4 features
CONFIGS = [
    (16, 2, 17, 16, 0.02, 8.0),
    (4, 2, 10, 64, 0.01, 8.0),
    (3, 2, 15, 2, 0.5, 4.0),
    (1, 2, 12, 16, 0.05, 8.0),
    (5, 3, 12, 8, 0.05, 8.0),
    (6, 4, 14, 16, 0.03, 6.0),
]
N = 600  # the interpreter runs numpy per program: small batches keep the file at a few seconds


def make(cfg, device, seed=0, scale=0.5) -> HashGridEncoding:
    L, F, log2T, base, finest, extent = cfg
    enc = HashGridEncoding(L, F, log2T, base, finest, extent, seed=seed)
    enc.fast_cpu_kernel = False  # the pure-PyTorch reference on CPU tensors
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # table values of order one so differences are visible
        enc.table.copy_((torch.rand(enc.table.shape, generator=g) * 2 - 1) * scale)
    return enc.to(device)


def points(n, device, seed=0, lo=-7.0, hi=9.0) -> torch.Tensor:
    """Random points (n, 3) in metres, negative and beyond the nominal extent included."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) * (hi - lo) + lo).to(device)


def reference(enc, x):
    """The pure-PyTorch path, whatever the dispatch would pick for this device."""
    old = ht.set_enabled(False)
    try:
        return enc(x)
    finally:
        ht.set_enabled(old)


def fused(enc, x):
    return ht.hashgrid_encode(x, enc.table, ht.TritonSpec.of(enc))


def close(a, b, tol):
    """|a - b| <= tol * max(1, max|b|), elementwise."""
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= tol * scale, f"max error {err:.3g} > {tol:g} x {scale:.3g}"


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_forward_matches_reference(cfg, device):
    enc = make(cfg, device)
    x = points(N, device)
    out = fused(enc, x)
    assert out.shape == (N, enc.out_dim) and out.dtype == torch.float32 and out.device.type == device
    close(out, reference(enc, x), 1e-5)


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_table_and_input_gradients_match_reference(cfg, device):
    enc = make(cfg, device)
    x = points(N, device, seed=1)
    g = torch.randn(N, enc.out_dim, generator=torch.Generator().manual_seed(2)).to(device)
    xr = x.clone().requires_grad_()
    gt_ref, gx_ref = torch.autograd.grad(reference(enc, xr), [enc.table, xr], g)
    xf = x.clone().requires_grad_()
    gt, gx = torch.autograd.grad(fused(enc, xf), [enc.table, xf], g)
    close(gt, gt_ref, 1e-4)
    close(gx, gx_ref, 1e-4)
    assert gt_ref.abs().sum() > 0 and gx_ref.abs().sum() > 0


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
def test_many_points_in_one_cell_accumulate(device):
    """The scatter's atomic adds: every point hits the same 8 rows per level (duplicate indices)."""
    enc = make(CONFIGS[2], device)
    x = (torch.full((N, 3), 0.3) + torch.rand(N, 3, generator=torch.Generator().manual_seed(3)) * 1e-3).to(device)
    g = torch.ones(N, enc.out_dim, device=device)
    (gt_ref,) = torch.autograd.grad(reference(enc, x), [enc.table], g)
    (gt,) = torch.autograd.grad(fused(enc, x), [enc.table], g)
    close(gt, gt_ref, 1e-4)


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[4]])
def test_eikonal_double_backward_matches_reference(cfg, device):
    """Loss on the input gradient (eikonal), back to the table and to a head's parameter."""
    enc = make(cfg, device, scale=0.1)
    x = points(N // 2, device, seed=4)
    head = torch.randn(enc.out_dim, generator=torch.Generator().manual_seed(5)).to(device).requires_grad_()

    def grads(encode):
        xq = x.clone().requires_grad_()
        sdf = (torch.tanh(encode(enc, xq)) * head).sum(-1)
        (gx,) = torch.autograd.grad(sdf.sum(), xq, create_graph=True)
        loss = ((gx.norm(dim=-1) - 1) ** 2).mean() + sdf.square().mean()
        return torch.autograd.grad(loss, [enc.table, head])

    ref_t, ref_h = grads(reference)
    got_t, got_h = grads(fused)
    close(got_t, ref_t, 1e-4)
    close(got_h, ref_h, 1e-4)


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[5]])
def test_fused_jacobian_matches_reference(cfg, device):
    enc = make(cfg, device)
    x = points(N, device, seed=6)
    feat, jac = ht.encode_with_jacobian(enc, x)
    feat_ref, jac_ref = hx.reference_encode_with_jacobian(enc, x)
    assert jac.shape == (N, enc.out_dim, 3)
    close(feat, feat_ref, 1e-5)
    close(jac, jac_ref, 1e-4)


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
def test_frozen_table_query_gradient(device):
    """no_table_grad(): the features-with-jacobian path, gradient w.r.t. positions only."""
    enc = make(CONFIGS[1], device)
    x = points(N, device, seed=7)
    g = torch.randn(N, enc.out_dim, generator=torch.Generator().manual_seed(8)).to(device)
    xr = x.clone().requires_grad_()
    (gx_ref,) = torch.autograd.grad(reference(enc, xr), [xr], g)
    xf = x.clone().requires_grad_()
    with hx.no_table_grad():
        out = ht.encode(enc, xf)
    assert type(out.grad_fn).__name__.startswith("_FrozenTableFn"), type(out.grad_fn).__name__
    (gx,) = torch.autograd.grad(out, [xf], g)
    close(gx, gx_ref, 1e-4)


@requires_triton
def test_grid_spec_of_the_cpu_kernel_is_accepted():
    """The CPU kernel's spec (hashgrid_ext.GridSpec.of) works too: its inv_cell is moved to x's device."""
    device = "cuda" if HAS_CUDA and not INTERPRETED else "cpu"
    if device == "cpu" and not INTERPRETED:
        pytest.skip("no device for the kernels in this process")
    enc = make(CONFIGS[3], device)
    x = points(100, device)
    close(ht.hashgrid_encode(x, enc.table, hx.GridSpec.of(enc)), reference(enc, x), 1e-5)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
@requires_triton
def test_cuda_forward_dispatches_to_triton():
    """HashGridEncoding.forward on CUDA tensors goes through the kernels (and off when disabled)."""
    enc = make(CONFIGS[0], "cuda")
    x = points(1000, "cuda").requires_grad_()
    out = enc(x)
    assert type(out.grad_fn).__name__.startswith("_HashGridFn"), type(out.grad_fn).__name__
    old = ht.set_enabled(False)
    try:
        assert not type(enc(x).grad_fn).__name__.startswith("_HashGridFn")
    finally:
        ht.set_enabled(old)


def test_unavailable_reason_is_reported():
    """available() and unavailable_reason() agree, and set_enabled turns the path off."""
    assert ht.available() == (ht.unavailable_reason() is None)
    old = ht.set_enabled(False)
    try:
        assert not ht.available()
        assert ("disabled" if NO_TRITON is None else "does not import") in ht.unavailable_reason()
    finally:
        ht.set_enabled(old)


@requires_triton
@pytest.mark.parametrize("capability", [90, 87], ids=["sm90-H100-H200", "sm87-Jetson-Orin"])
def test_kernels_compile_for_the_gpu_without_one(capability):
    """Triton compiles every kernel variant to PTX (and ptxas to machine code) for the target GPU on a
    machine without one: catches what the interpreter does not check (e.g. non-constexpr globals).
    Run in a subprocess: this process may have set TRITON_INTERPRET=1."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    code = ("import json; from neural_mapping import hashgrid_triton as h; "
            f"print(json.dumps(h.compile_check({capability})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    sizes = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(sizes) == 7 and all(v > 1000 for v in sizes.values())


@requires_triton
@pytest.mark.parametrize("device", DEVICES)
def test_batches_beyond_32_bit_offsets_are_split(device, monkeypatch):
    """A batch over the per-launch limit goes in pieces, same values and gradients (limit lowered here)."""
    enc = make(CONFIGS[1], device)
    x = points(300, device, seed=9).requires_grad_()
    ref = fused(enc, x)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    monkeypatch.setattr(ht, "_max_points", lambda F, spec: 128)
    out = fused(enc, x)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out, ref) and torch.equal(g, g_ref)
    feat, jac = ht.encode_with_jacobian(enc, x)
    assert feat.shape == (300, enc.out_dim) and jac.shape == (300, enc.out_dim, 3)
