"""Field values, and values with their gradient w.r.t. position, without autograd (fast queries).

``value(field, pts)``: the value alone, in cache-sized blocks, computing only the value output.
``value_and_gradient(field, pts)``: what ``Mapper.query`` needs for gradients and colours -- the
value (sdf, or density for a RadianceField), d value / d x (N, 3) and the geometry features
(N, G) for the colour head -- from one forward pass that keeps each layer's activation
derivative, then a vector-Jacobian product of the *value output only* back through the trunk:

  forward   e = [enc(x), s x];  z_i = W_i a_{i-1} + b_i;  a_i = act(z_i) (keep act'(z_i));  h = W_o a + b_o
  backward  g = W_o[0];  for each hidden layer, last first: g = (g * act'(z_i)) W_i     (N, H) matmuls
            grad_x = J_enc(x)^T g[:, :D] + s g[:, D:D+3]

No graph is built and no generic backward runs. The hash-grid jacobian J (N, L*F, 3) comes with
the features from the fused CPU kernel in one pass and is contracted by its ``jac_vjp`` kernel
(:mod:`neural_mapping.hashgrid_ext`; pure-PyTorch analytic jacobian and a batched product
elsewhere, e.g. CUDA: the same code on every device). Other encodings take their (elementwise)
gradient from autograd on the encoding alone. Supported trunks: ``mlp`` with relu / softplus /
sine and ``siren``; for anything else :func:`supports` is false and callers use
:func:`autograd_value_and_gradient`, the reference this module is tested against
(tests/test_fields.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neural_mapping import hashgrid_ext
from neural_mapping.encodings import HashGridEncoding

#: points per internal block (~1 KB of jacobian and activations per point). 16384 and 65536 measured
#: the same on 1 thread; 65536 means 4x fewer OpenMP parallel regions per point, which matters
#: with libgomp's default (spinning) wait policy on a loaded machine (2 threads: coloured 2 cm mesh
#: 8.2 s vs 11.6 s); on 262144-point chunks activations no longer fit in cache (memory-bound)
BLOCK = 65536


def _layers(trunk: nn.Module):
    """The trunk as [(linear, kind, param)] hidden layers and the output linear, or None if unsupported.

    kind: "relu", "softplus" (param (beta, threshold)), "sine" (param w0: sin(w0 z)).
    """
    from neural_mapping.fields import Sine, SirenLayer

    if not isinstance(trunk, nn.Sequential) or len(trunk) == 0 or not isinstance(trunk[-1], nn.Linear):
        return None
    mods = list(trunk)[:-1]
    hidden = []
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, SirenLayer):
            hidden.append((m.linear, "sine", float(m.omega0)))
            i += 1
            continue
        if not isinstance(m, nn.Linear) or i + 1 >= len(mods):
            return None
        act = mods[i + 1]
        if isinstance(act, nn.ReLU):
            hidden.append((m, "relu", None))
        elif isinstance(act, nn.Softplus):
            hidden.append((m, "softplus", (float(act.beta), float(act.threshold))))
        elif isinstance(act, Sine):
            hidden.append((m, "sine", float(act.w0)))
        else:
            return None
        i += 2
    return hidden, trunk[-1]


def supports(field) -> bool:
    """Whether :func:`value_and_gradient` applies to this field (else use the autograd reference)."""
    return getattr(field, "kind", None) in ("sdf", "nerf") and _layers(field.trunk) is not None


def _act(z: torch.Tensor, kind: str, param):
    """(activation, what its backward needs) at z. relu: applied in place (z is overwritten) and the
    activation itself is what the backward needs (aten threshold_backward: one vectorised pass, no
    mask tensor); softplus, sine: act'(z)."""
    if kind == "relu":
        a = z.relu_()
        return a, a
    if kind == "softplus":
        beta, thr = param
        a = F.softplus(z, beta, thr)
        bz = z * beta
        return a, torch.where(bz > thr, torch.ones_like(z), torch.sigmoid(bz))
    w0 = param  # sine
    wz = z * w0
    return torch.sin(wz), torch.cos(wz) * w0


def _plan(field, layers):
    """Detached weights in the layout the block loop uses, built once per call.

    The first layer's backward weight is zero-padded to a multiple of 8 columns: (N, 64) x (64, 35)
    products measured ~1.3x slower than (64, 40) on AVX2; the padded gradient columns are never read.
    """
    hidden, out_lin = layers
    plan = []
    for i, (lin, kind, param) in enumerate(hidden):
        w = lin.weight.detach()
        wb = w
        if i == 0 and w.shape[1] % 8:
            wb = torch.zeros(w.shape[0], -(-w.shape[1] // 8) * 8, dtype=w.dtype, device=w.device)
            wb[:, :w.shape[1]] = w
        b = lin.bias.detach() if lin.bias is not None else None
        plan.append((w.t(), b, wb, kind, param))
    wo = out_lin.weight.detach()
    bo = out_lin.bias.detach() if out_lin.bias is not None else None
    return plan, wo, bo


def _trunk_input(field, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The trunk's input: the encoding, and the scaled raw positions when the field feeds them."""
    return torch.cat([e, x * field.xyz_scale], dim=1) if field.include_xyz else e


def _hidden(a: torch.Tensor, hidden, derivs: list | None = None) -> torch.Tensor:
    """The hidden layers; with ``derivs``, what each activation's backward needs is appended."""
    for wt, b, _, kind, param in hidden:
        a, d = _act(a @ wt if b is None else torch.addmm(b, a, wt), kind, param)
        if derivs is not None:
            derivs.append(d)
    return a


def _value_output(a: torch.Tensor, wo: torch.Tensor, bo) -> torch.Tensor:
    """Output 0 only: a matrix-vector product (~6x cheaper than all 1 + G outputs)."""
    # the bias expanded to (N,): a 0-dim bias would give a 0-dim result for N = 0
    return a @ wo[0] if bo is None else torch.addmv(bo[0].expand(a.shape[0]), a, wo[0])


def _blocked(fn, x: torch.Tensor, block: int):
    """fn (a block of x -> tuple of (n, ...) tensors or None) over x in blocks of ``block`` rows,
    into outputs allocated once (x in one call when it fits a block)."""
    N = x.shape[0]
    if N <= block:
        return fn(x)
    outs = None
    for s in range(0, N, block):
        r = fn(x[s:s + block])
        if outs is None:
            outs = tuple(None if t is None else t.new_empty((N,) + tuple(t.shape[1:])) for t in r)
        for o, t in zip(outs, r):
            if o is not None:
                o[s:s + block] = t
    return outs


def _block(field, x: torch.Tensor, plan, want_geo: bool):
    hidden, wo, bo = plan
    enc = field.encoding
    hashgrid = isinstance(enc, HashGridEncoding)
    if hashgrid:
        e, J = hashgrid_ext.encode_with_jacobian(enc, x)  # float32 (the tables' type)
        e, J = e.to(x.dtype), J.to(x.dtype)
    else:  # any other encoding: its own (elementwise) gradient through autograd, the trunk analytic
        with torch.enable_grad():
            xe = x.detach().clone().requires_grad_(True)
            e_graph = enc(xe)
        e = e_graph.detach()
    D = e.shape[1]
    derivs = []
    a = _hidden(_trunk_input(field, e, x), hidden, derivs)
    if want_geo:
        h = a @ wo.t() if bo is None else torch.addmm(bo, a, wo.t())
        value = h[:, 0]
    else:
        value = _value_output(a, wo, bo)
    # vector-Jacobian product of output 0 only
    g = wo[0]  # (H,)
    for (_, _, wb, kind, _), d in zip(reversed(hidden), reversed(derivs)):
        if kind == "relu":
            g = torch.ops.aten.threshold_backward(g.expand_as(d) if g.dim() == 1 else g, d, 0.0)
        else:
            g = d * g
        g = g @ wb  # (N, in) (first layer: padded columns)
    if g.dim() == 1:  # no hidden layer: a linear trunk
        g = g.expand(x.shape[0], -1)
    xyz = field.xyz_scale if field.include_xyz else None
    if hashgrid:  # J^T g_feat (+ s g_xyz) in one pass over J
        grad = hashgrid_ext.jacobian_vjp(J, g, D, xyz_scale=xyz)
    else:
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(e_graph, xe, g[:, :D].contiguous())
        if xyz is not None:
            grad = grad + g[:, D:D + 3] * xyz
    prior = getattr(field, "prior", None)
    if prior is not None:  # sdf = network + fused TSDF prior (neural_mapping.sdf_prior)
        q, dq = prior.value_and_gradient(x)
        value, grad = value + q.to(value.dtype), grad + dq.to(grad.dtype)
    if field.kind == "nerf":  # value = trunc_exp(h0) = exp(min(h0, 15))
        h0 = value
        value = torch.exp(torch.clamp(h0, max=15.0))
        grad = grad * torch.where(h0 < 15.0, value, 0.0)[:, None]
    geo = h[:, 1:] if want_geo else None
    return value, grad, geo


def value_and_gradient(field, pts: torch.Tensor, want_geo: bool = False, block: int | None = None):
    """(value (N,), d value / d x (N, 3), geo (N, G) or None) at pts (N, 3), no autograd graph.

    Same numbers as :func:`autograd_value_and_gradient` up to float rounding. Raises
    ValueError when :func:`supports` is false.
    """
    v, g, geo, _ = _run(field, pts, want_geo, False, BLOCK if block is None else block)
    return v, g, geo


def head_on_color(field, geo: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Colour (N, 3) seen head-on: view direction -grad/|grad| for sdf (looking into the surface),
    +grad/|grad| for density (which grows into the surface)."""
    n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return field.color(geo, -n if field.kind == "sdf" else n)


def value_gradient_color(field, pts: torch.Tensor, block: int | None = None):
    """(value (N,), gradient (N, 3), head-on colour (N, 3)) at pts (N, 3), per cache-sized block.

    The colour head runs inside each block too (on 262144-point chunks at once its activations
    were memory-bound). Fields :func:`supports` rejects take the autograd reference per block.
    """
    block = BLOCK if block is None else block
    if supports(field):
        v, g, _, c = _run(field, pts, True, True, block)
        return v, g, c
    def one(xb):
        v, g, geo = autograd_value_and_gradient(field, xb)
        with torch.no_grad():
            return v, g, head_on_color(field, geo, g)

    return _blocked(one, pts.detach(), block)


def _run(field, pts: torch.Tensor, want_geo: bool, want_color: bool, block: int):
    layers = _layers(field.trunk)
    if layers is None or getattr(field, "kind", None) not in ("sdf", "nerf"):
        raise ValueError("value_and_gradient: unsupported field (use autograd_value_and_gradient)")
    dtype = layers[1].weight.dtype  # float32, or float64 for a field converted with .double()
    x = pts.detach().to(dtype).contiguous()

    def one(xb):
        v, g, geo = _block(field, xb, plan, want_geo or want_color)
        return v, g, (geo if want_geo else None), (head_on_color(field, geo, g) if want_color else None)

    with torch.no_grad():
        plan = _plan(field, layers)
        return _blocked(one, x, block)


def _value_block(field, x: torch.Tensor, plan) -> torch.Tensor:
    hidden, wo, bo = plan
    h0 = _value_output(_hidden(_trunk_input(field, field.encoding(x), x), hidden), wo, bo)
    if getattr(field, "prior", None) is not None:
        h0 = h0 + field.prior(x).to(h0.dtype)
    return torch.exp(torch.clamp(h0, max=15.0)) if field.kind == "nerf" else h0


def value(field, pts: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """Field value (N,) at pts (N, 3) without autograd, in cache-sized blocks.

    For supported trunks only the value output is computed (a matrix-vector product instead of
    all 1 + G outputs) and activations are applied in place; other fields run ``field(x).value``
    per block. Large chunks in one pass were measured memory-bound (a (262144, 64) activation is
    67 MB: relu alone took ~0.5 us per point).
    """
    block = BLOCK if block is None else block
    layers = _layers(field.trunk) if getattr(field, "kind", None) in ("sdf", "nerf") else None
    dtype = field.trunk[-1].weight.dtype
    x = pts.detach().to(dtype).contiguous()
    with torch.no_grad():
        plan = _plan(field, layers) if layers is not None else None
        fn = (lambda xb: _value_block(field, xb, plan)) if plan is not None else (lambda xb: field(xb).value)
        return _blocked(lambda xb: (fn(xb),), x, block)[0]


def autograd_value_and_gradient(field, pts: torch.Tensor, want_geo: bool = True):
    """The reference: (value, d value / d x, geo) through autograd (any field)."""
    with torch.enable_grad(), hashgrid_ext.no_table_grad():
        p = pts.detach().to(field.trunk[-1].weight.dtype).clone().requires_grad_(True)
        out = field(p)
        (g,) = torch.autograd.grad(out.value.sum(), p)
    return out.value.detach(), g, out.geo.detach()
