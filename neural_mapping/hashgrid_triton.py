"""Fused GPU path of the hash-grid encoding: Triton kernels (forward, jacobian, input gradient, jvp,
table scatter) with the same API and math as the CPU C++ kernel of :mod:`neural_mapping.hashgrid_ext`.

``HashGridEncoding.forward`` uses it automatically for CUDA tensors when ``import triton`` works
(:func:`available`); ``NEURAL_MAPPING_NO_TRITON=1`` or :func:`set_enabled` turns it off (the
pure-PyTorch reference in :mod:`neural_mapping.encodings` is then used, as before). The pure-PyTorch
path stays the definition: ``tests/test_hashgrid_triton.py`` checks values and both gradients
against it, on CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``, set before this
module is imported) and on CUDA when present.

Math (identical to ``csrc/hashgrid.cpp``): level l, xs = x * inv_cell[l] (float32), x0 = floor(xs),
f = xs - x0; corner c has bits (c>>2&1, c>>1&1, c&1) along (x, y, z), weight wx*wy*wz; rows of
dense levels (l < n_dense) are (cx mod R) + R((cy mod R) + R(cz mod R)), of hashed levels
(cx ^ cy*2654435761 ^ cz*805459861) & (T-1) in uint32 (same low bits as the reference's int64);
absolute row l*T + row. Shapes: x (N, 3), table (L*T, F), features (N, L*F) [level][feature].

Public API (mirrors hashgrid_ext)
  available() -> bool, unavailable_reason(), set_enabled(flag), enabled()
  TritonSpec.of(encoding)  (device-side inv_cell: no host sync)
  hashgrid_encode(x, table, spec)   (N,3) -> (N, L*F); autograd w.r.t. x and table, twice (eikonal),
                                    except d2/dx2 (zero, as the CPU kernel)
  encode(encoding, x)               what HashGridEncoding.forward calls (honours no_table_grad)
  forward_jac(x, table, spec)       features (N, L*F), jacobian (N, L*F, 3), no autograd
The scatter (table gradient) uses atomic adds: on the GPU the order of additions, and so the last
bits of the table gradient, may differ run to run (as with index_add_ on CUDA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

try:  # Triton is optional: CUDA builds of torch ship it; CPU machines may lack it
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except Exception as e:  # ImportError, or a broken install
    triton = tl = None
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"

_P1 = 2654435761
_P2 = 805459861
_state = {"enabled": os.environ.get("NEURAL_MAPPING_NO_TRITON", "") in ("", "0")}


def unavailable_reason() -> str | None:
    if _IMPORT_ERROR is not None:
        return f"triton does not import ({_IMPORT_ERROR})"
    if not _state["enabled"]:
        return "disabled (NEURAL_MAPPING_NO_TRITON=1 or set_enabled(False))"
    return None


def available() -> bool:
    """Triton imports and the path is enabled."""
    return unavailable_reason() is None


def set_enabled(flag: bool) -> bool:
    """Turn the Triton path on or off (benchmarks compare against the pure-PyTorch path); returns the old value."""
    old = _state["enabled"]
    _state["enabled"] = bool(flag)
    return old


def enabled() -> bool:
    return _state["enabled"]


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


@dataclass(frozen=True)
class TritonSpec:
    """Static description of a hash grid; ``inv_cell`` lives on the tensors' device (no host copy)."""

    inv_cell: torch.Tensor  # (L,) float32
    table_size: int
    n_dense: int
    dense_res: int

    @classmethod
    def of(cls, enc) -> "TritonSpec":
        return cls(enc.inv_cell.detach().float().contiguous(), int(enc.table_size), int(enc.n_dense), int(enc.dense_res))

    @classmethod
    def from_grid_spec(cls, spec, device) -> "TritonSpec":
        """From a hashgrid_ext.GridSpec (its inv_cell is on the CPU)."""
        return cls(spec.inv_cell.to(device).float().contiguous(), int(spec.table_size), int(spec.n_dense),
                   int(spec.dense_res))

    @property
    def n_levels(self) -> int:
        return int(self.inv_cell.shape[0])


# ----------------------------------------------------------------------------- kernels

if triton is not None:
    # globals read inside @triton.jit functions must be constexpr (compiled Triton refuses plain globals)
    _HP1 = tl.constexpr(_P1)
    _HP2 = tl.constexpr(_P2)

    @triton.jit
    def _coords(x_ptr, offs, m, inv):
        """Per point: fractional position in the cell (f) and its lower corner (i), per axis."""
        px = tl.load(x_ptr + offs * 3 + 0, mask=m, other=0.0)
        py = tl.load(x_ptr + offs * 3 + 1, mask=m, other=0.0)
        pz = tl.load(x_ptr + offs * 3 + 2, mask=m, other=0.0)
        xs = px * inv
        ys = py * inv
        zs = pz * inv
        x0 = tl.floor(xs)
        y0 = tl.floor(ys)
        z0 = tl.floor(zs)
        return xs - x0, ys - y0, zs - z0, x0.to(tl.int32), y0.to(tl.int32), z0.to(tl.int32)

    @triton.jit
    def _corner(fx, fy, fz, ix, iy, iz, c: tl.constexpr, base, dense, R, T):
        """Absolute table row and per-axis weights (wx, wy, wz) of corner c."""
        bx: tl.constexpr = (c >> 2) & 1
        by: tl.constexpr = (c >> 1) & 1
        bz: tl.constexpr = c & 1
        cx = ix + bx
        cy = iy + by
        cz = iz + bz
        # dense periodic row (correct for C and floor remainders alike)
        dx = ((cx % R) + R) % R
        dy = ((cy % R) + R) % R
        dz = ((cz % R) + R) % R
        rd = dx + R * (dy + R * dz)
        # spatial hash in uint32 (wrapping products)
        h = cx.to(tl.uint32) ^ (cy.to(tl.uint32) * _HP1) ^ (cz.to(tl.uint32) * _HP2)
        rh = (h & (T - 1).to(tl.uint32)).to(tl.int32)
        row = base + tl.where(dense, rd, rh)
        if bx == 1:
            wx = fx
        else:
            wx = 1.0 - fx
        if by == 1:
            wy = fy
        else:
            wy = 1.0 - fy
        if bz == 1:
            wz = fz
        else:
            wz = 1.0 - fz
        return row, wx, wy, wz

    @triton.jit
    def _fwd_kernel(x_ptr, table_ptr, inv_ptr, out_ptr, jac_ptr, N, T, n_dense, R,
                    F: tl.constexpr, FP: tl.constexpr, WANT_JAC: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        l = tl.program_id(1)
        L = tl.num_programs(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        kk = tl.arange(0, FP)
        km = kk < F
        m2 = m[:, None] & km[None, :]
        inv = tl.load(inv_ptr + l)
        fx, fy, fz, ix, iy, iz = _coords(x_ptr, offs, m, inv)
        base = l * T
        dense = l < n_dense
        acc = tl.zeros((BLOCK, FP), dtype=tl.float32)
        jx = tl.zeros((BLOCK, FP), dtype=tl.float32)
        jy = tl.zeros((BLOCK, FP), dtype=tl.float32)
        jz = tl.zeros((BLOCK, FP), dtype=tl.float32)
        for c in tl.static_range(8):
            row, wx, wy, wz = _corner(fx, fy, fz, ix, iy, iz, c, base, dense, R, T)
            t = tl.load(table_ptr + row[:, None] * F + kk[None, :], mask=m2, other=0.0)
            acc += (wx * wy * wz)[:, None] * t
            if WANT_JAC:
                jx += ((2.0 * ((c >> 2) & 1) - 1.0) * inv * wy * wz)[:, None] * t
                jy += ((2.0 * ((c >> 1) & 1) - 1.0) * inv * wx * wz)[:, None] * t
                jz += ((2.0 * (c & 1) - 1.0) * inv * wx * wy)[:, None] * t
        o = offs[:, None] * (L * F) + l * F + kk[None, :]
        tl.store(out_ptr + o, acc, mask=m2)
        if WANT_JAC:
            tl.store(jac_ptr + o * 3 + 0, jx, mask=m2)
            tl.store(jac_ptr + o * 3 + 1, jy, mask=m2)
            tl.store(jac_ptr + o * 3 + 2, jz, mask=m2)

    @triton.jit
    def _input_grad_kernel(x_ptr, table_ptr, inv_ptr, g_ptr, out_ptr, N, L, T, n_dense, R,
                           F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr):
        """grad_x[n] = sum_{l,k} g[n, lF+k] d feature_{lF+k} / dx; levels looped here (no atomics)."""
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        kk = tl.arange(0, FP)
        m2 = m[:, None] & (kk < F)[None, :]
        ax = tl.zeros((BLOCK,), dtype=tl.float32)
        ay = tl.zeros((BLOCK,), dtype=tl.float32)
        az = tl.zeros((BLOCK,), dtype=tl.float32)
        for l in range(L):
            inv = tl.load(inv_ptr + l)
            fx, fy, fz, ix, iy, iz = _coords(x_ptr, offs, m, inv)
            base = l * T
            dense = l < n_dense
            g = tl.load(g_ptr + offs[:, None] * (L * F) + l * F + kk[None, :], mask=m2, other=0.0)
            for c in tl.static_range(8):
                row, wx, wy, wz = _corner(fx, fy, fz, ix, iy, iz, c, base, dense, R, T)
                t = tl.load(table_ptr + row[:, None] * F + kk[None, :], mask=m2, other=0.0)
                s = tl.sum(g * t, axis=1)  # (BLOCK,) sum_k g_k t_ck
                ax += (2.0 * ((c >> 2) & 1) - 1.0) * inv * wy * wz * s
                ay += (2.0 * ((c >> 1) & 1) - 1.0) * inv * wx * wz * s
                az += (2.0 * (c & 1) - 1.0) * inv * wx * wy * s
        tl.store(out_ptr + offs * 3 + 0, ax, mask=m)
        tl.store(out_ptr + offs * 3 + 1, ay, mask=m)
        tl.store(out_ptr + offs * 3 + 2, az, mask=m)

    @triton.jit
    def _jvp_kernel(x_ptr, table_ptr, inv_ptr, v_ptr, out_ptr, N, T, n_dense, R,
                    F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr):
        """out[n, lF+k] = sum_c (v[n] . d w_c / dx) table[row_c, k]."""
        pid = tl.program_id(0)
        l = tl.program_id(1)
        L = tl.num_programs(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        kk = tl.arange(0, FP)
        m2 = m[:, None] & (kk < F)[None, :]
        inv = tl.load(inv_ptr + l)
        fx, fy, fz, ix, iy, iz = _coords(x_ptr, offs, m, inv)
        v0 = tl.load(v_ptr + offs * 3 + 0, mask=m, other=0.0)
        v1 = tl.load(v_ptr + offs * 3 + 1, mask=m, other=0.0)
        v2 = tl.load(v_ptr + offs * 3 + 2, mask=m, other=0.0)
        base = l * T
        dense = l < n_dense
        acc = tl.zeros((BLOCK, FP), dtype=tl.float32)
        for c in tl.static_range(8):
            row, wx, wy, wz = _corner(fx, fy, fz, ix, iy, iz, c, base, dense, R, T)
            dv = inv * ((2.0 * ((c >> 2) & 1) - 1.0) * v0 * (wy * wz) + (2.0 * ((c >> 1) & 1) - 1.0) * v1 * (wx * wz)
                        + (2.0 * (c & 1) - 1.0) * v2 * (wx * wy))
            t = tl.load(table_ptr + row[:, None] * F + kk[None, :], mask=m2, other=0.0)
            acc += dv[:, None] * t
        tl.store(out_ptr + offs[:, None] * (L * F) + l * F + kk[None, :], acc, mask=m2)

    @triton.jit
    def _scatter_kernel(x_ptr, g_ptr, v_ptr, inv_ptr, out_ptr, N, T, n_dense, R,
                        F: tl.constexpr, FP: tl.constexpr, DIRECTIONAL: tl.constexpr, BLOCK: tl.constexpr):
        """grad_table[row_c, k] += g[n, lF+k] * (w_c, or v[n] . d w_c / dx when DIRECTIONAL)."""
        pid = tl.program_id(0)
        l = tl.program_id(1)
        L = tl.num_programs(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        kk = tl.arange(0, FP)
        m2 = m[:, None] & (kk < F)[None, :]
        inv = tl.load(inv_ptr + l)
        fx, fy, fz, ix, iy, iz = _coords(x_ptr, offs, m, inv)
        g = tl.load(g_ptr + offs[:, None] * (L * F) + l * F + kk[None, :], mask=m2, other=0.0)
        if DIRECTIONAL:
            v0 = tl.load(v_ptr + offs * 3 + 0, mask=m, other=0.0)
            v1 = tl.load(v_ptr + offs * 3 + 1, mask=m, other=0.0)
            v2 = tl.load(v_ptr + offs * 3 + 2, mask=m, other=0.0)
        base = l * T
        dense = l < n_dense
        for c in tl.static_range(8):
            row, wx, wy, wz = _corner(fx, fy, fz, ix, iy, iz, c, base, dense, R, T)
            if DIRECTIONAL:
                wc = inv * ((2.0 * ((c >> 2) & 1) - 1.0) * v0 * (wy * wz) + (2.0 * ((c >> 1) & 1) - 1.0) * v1 * (wx * wz)
                            + (2.0 * (c & 1) - 1.0) * v2 * (wx * wy))
            else:
                wc = wx * wy * wz
            tl.atomic_add(out_ptr + row[:, None] * F + kk[None, :], wc[:, None] * g, mask=m2)


# ----------------------------------------------------------------------------- launchers

# points per program; under the interpreter (numpy) larger blocks mean fewer, vectorised programs
_BLOCK = 1024 if os.environ.get("TRITON_INTERPRET", "") not in ("", "0") else 128
_BLOCK_GRAD = _BLOCK


def _require():
    if _IMPORT_ERROR is not None:
        raise RuntimeError(f"hashgrid_triton: {unavailable_reason()}")


def _check(x, table, spec):
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"hashgrid_triton: x must be (N, 3), got {tuple(x.shape)}")
    if table.dim() != 2 or table.shape[0] != spec.n_levels * spec.table_size:
        raise ValueError(f"hashgrid_triton: table has {tuple(table.shape)}, expected (L*T = "
                         f"{spec.n_levels * spec.table_size}, F)")
    if table.numel() >= 2**31 or x.shape[0] > _max_points(table.shape[1], spec):
        raise ValueError("hashgrid_triton: sizes beyond 32-bit offsets; split the batch")
    if x.device != table.device or spec.inv_cell.device != x.device:
        raise ValueError("hashgrid_triton: x, table and spec.inv_cell must be on one device")


def _max_points(F: int, spec: TritonSpec) -> int:
    """Most points per launch with 32-bit offsets into the (N, L*F, 3) jacobian."""
    return (2**31 - 1) // (spec.n_levels * F * 3)


def _fp(F: int) -> int:
    return 1 << max(0, (F - 1).bit_length())


def forward(x, table, spec: TritonSpec, want_jac: bool = False):
    _require()
    N, F, L = x.shape[0], table.shape[1], spec.n_levels
    out = torch.empty(N, L * F, device=x.device, dtype=torch.float32)
    jac = torch.empty(N, L * F, 3, device=x.device, dtype=torch.float32) if want_jac else out
    if N > 0:
        grid = (triton.cdiv(N, _BLOCK), L)
        _fwd_kernel[grid](x, table, spec.inv_cell, out, jac, N, spec.table_size, spec.n_dense, spec.dense_res,
                          F=F, FP=_fp(F), WANT_JAC=want_jac, BLOCK=_BLOCK)
    return (out, jac) if want_jac else out


def input_grad(x, table, g, spec: TritonSpec):
    _require()
    N, F, L = x.shape[0], table.shape[1], spec.n_levels
    out = torch.empty(N, 3, device=x.device, dtype=torch.float32)
    if N > 0:
        _input_grad_kernel[(triton.cdiv(N, _BLOCK_GRAD),)](x, table, spec.inv_cell, g, out, N, L, spec.table_size,
                                                            spec.n_dense, spec.dense_res, F=F, FP=_fp(F),
                                                            BLOCK=_BLOCK_GRAD)
    return out


def jvp(x, table, v, spec: TritonSpec):
    _require()
    N, F, L = x.shape[0], table.shape[1], spec.n_levels
    out = torch.empty(N, L * F, device=x.device, dtype=torch.float32)
    if N > 0:
        _jvp_kernel[(triton.cdiv(N, _BLOCK), L)](x, table, spec.inv_cell, v, out, N, spec.table_size, spec.n_dense,
                                                 spec.dense_res, F=F, FP=_fp(F), BLOCK=_BLOCK)
    return out


def scatter(x, g, v, n_rows: int, spec: TritonSpec):
    _require()
    N, L = x.shape[0], spec.n_levels
    F = g.shape[1] // L
    out = torch.zeros(n_rows, F, device=x.device, dtype=torch.float32)
    if N > 0:
        _scatter_kernel[(triton.cdiv(N, _BLOCK), L)](x, g, v if v is not None else x, spec.inv_cell, out, N,
                                                     spec.table_size, spec.n_dense, spec.dense_res, F=F, FP=_fp(F),
                                                     DIRECTIONAL=v is not None, BLOCK=_BLOCK)
    return out


# ----------------------------------------------------------------------------- autograd (as hashgrid_ext)


class _TableGrad(torch.autograd.Function):
    """(x, g (N, L*F)) -> d/dtable of sum(g * features): (L*T, F). Linear in g."""

    @staticmethod
    def forward(ctx, x, g, n_rows, spec):
        ctx.save_for_backward(x)
        ctx.spec = spec
        return scatter(x, g.contiguous(), None, n_rows, spec)

    @staticmethod
    def backward(ctx, u):
        (x,) = ctx.saved_tensors
        grad_g = forward(x, u.contiguous(), ctx.spec) if ctx.needs_input_grad[1] else None
        return None, grad_g, None, None


class _InputGrad(torch.autograd.Function):
    """(x, table, g) -> grad_x (N, 3); its backward gives the table and g terms (d2/dx2: None)."""

    @staticmethod
    def forward(ctx, x, table, g, spec):
        g = g.contiguous()
        ctx.save_for_backward(x, table, g)
        ctx.spec = spec
        return input_grad(x, table, g, spec)

    @staticmethod
    def backward(ctx, v):
        x, table, g = ctx.saved_tensors
        v = v.contiguous()
        grad_table = grad_g = None
        if ctx.needs_input_grad[1]:
            grad_table = scatter(x, g, v, table.shape[0], ctx.spec)
        if ctx.needs_input_grad[2]:
            grad_g = jvp(x, table, v, ctx.spec)
        return None, grad_table, grad_g, None


class _HashGridFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, spec):
        ctx.save_for_backward(x, table)
        ctx.spec = spec
        return forward(x, table, spec)

    @staticmethod
    def backward(ctx, g):
        x, table = ctx.saved_tensors
        grad_x = grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = _TableGrad.apply(x, g, table.shape[0], ctx.spec)
        if ctx.needs_input_grad[0]:
            grad_x = _InputGrad.apply(x, table, g, ctx.spec)
        return grad_x, grad_table, None


class _FrozenTableFn(torch.autograd.Function):
    """Table constant; features and jacobian in one pass, backward a small batched product."""

    @staticmethod
    def forward(ctx, x, table, spec):
        out, jac = forward(x, table, spec, want_jac=True)
        ctx.save_for_backward(jac)
        return out

    @staticmethod
    def backward(ctx, g):
        (jac,) = ctx.saved_tensors
        grad_x = torch.bmm(g[:, None, :], jac)[:, 0, :] if ctx.needs_input_grad[0] else None
        return grad_x, None, None


def _spec_for(spec, device) -> TritonSpec:
    return spec if isinstance(spec, TritonSpec) else TritonSpec.from_grid_spec(spec, device)


def hashgrid_encode(x: torch.Tensor, table: torch.Tensor, spec) -> torch.Tensor:
    """Fused encoding of x (N, 3) metres -> (N, L*F); autograd w.r.t. x and table.

    ``spec``: a TritonSpec, or a hashgrid_ext.GridSpec (its inv_cell is copied to x's device).
    """
    spec = _spec_for(spec, x.device)
    x = x.float().contiguous()
    table = table.contiguous()
    n = _max_points(table.shape[1], spec)
    if x.shape[0] > n:  # batches beyond 32-bit offsets: in pieces (autograd joins them)
        return torch.cat([hashgrid_encode(x[i:i + n], table, spec) for i in range(0, x.shape[0], n)])
    _check(x, table, spec)
    return _HashGridFn.apply(x, table, spec)




def _frozen() -> bool:
    from neural_mapping import hashgrid_ext  # its no_table_grad() context is the one callers use

    return bool(getattr(hashgrid_ext._tls, "frozen", False))


def encode(enc, x: torch.Tensor) -> torch.Tensor:
    """HashGridEncoding.forward through the Triton kernels (honours hashgrid_ext.no_table_grad)."""
    spec = TritonSpec.of(enc)
    if _frozen():
        if x.requires_grad and x.dim() == 2 and x.shape[1] == 3 and x.shape[0] <= _max_points(enc.n_features, spec):
            xc = x.float().contiguous()
            table = enc.table.detach().contiguous()
            _check(xc, table, spec)
            return _FrozenTableFn.apply(xc, table, spec)
        return hashgrid_encode(x, enc.table.detach(), spec)
    return hashgrid_encode(x, enc.table, spec)


def forward_jac(x: torch.Tensor, table: torch.Tensor, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached features (N, L*F) and jacobian (N, L*F, 3) per metre, one fused pass."""
    spec = _spec_for(spec, x.device)
    with torch.no_grad():
        x = x.detach().float().contiguous()
        table = table.detach().contiguous()
        n = _max_points(table.shape[1], spec)
        if x.shape[0] > n:
            parts = [forward_jac(x[i:i + n], table, spec) for i in range(0, x.shape[0], n)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        _check(x, table, spec)
        return forward(x, table, spec, want_jac=True)


def encode_with_jacobian(enc, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return forward_jac(x, enc.table, TritonSpec.of(enc))


def compile_check(capability: int = 90, warp_size: int = 32) -> dict[str, int]:
    """Compile every kernel variant ahead of time for an NVIDIA GPU of compute ``capability`` (90: H100/H200,
    87: Jetson Orin, 86: RTX 30xx) without needing that GPU -> {variant: PTX size}. Raises on a compile
    error. Not in interpreter mode (TRITON_INTERPRET=1 gives interpreted kernels, nothing to compile)."""
    import inspect

    _require()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreting():
        raise RuntimeError("compile_check: TRITON_INTERPRET=1 is set (the kernels are interpreted)")
    target = GPUTarget("cuda", capability, warp_size)
    types = dict(x_ptr="*fp32", table_ptr="*fp32", inv_ptr="*fp32", out_ptr="*fp32", jac_ptr="*fp32", g_ptr="*fp32",
                 v_ptr="*fp32", N="i32", L="i32", T="i32", n_dense="i32", R="i32")
    variants = [(_fwd_kernel, dict(F=2, FP=2, WANT_JAC=False, BLOCK=_BLOCK)),
                (_fwd_kernel, dict(F=2, FP=2, WANT_JAC=True, BLOCK=_BLOCK)),
                (_fwd_kernel, dict(F=3, FP=4, WANT_JAC=True, BLOCK=_BLOCK)),
                (_input_grad_kernel, dict(F=2, FP=2, BLOCK=_BLOCK_GRAD)),
                (_jvp_kernel, dict(F=2, FP=2, BLOCK=_BLOCK)),
                (_scatter_kernel, dict(F=2, FP=2, DIRECTIONAL=False, BLOCK=_BLOCK)),
                (_scatter_kernel, dict(F=2, FP=2, DIRECTIONAL=True, BLOCK=_BLOCK))]
    out = {}
    for fn, consts in variants:
        names = list(inspect.signature(fn.fn).parameters)
        sig = {n: "constexpr" if n in consts else types[n] for n in names}
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target)
        out[f"{fn.fn.__name__}{consts}"] = len(k.asm.get("ptx", ""))
    return out
