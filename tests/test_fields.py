import math

import pytest
import torch

from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.fields import FieldOutput, RadianceField, SdfField, build_field, siren


def _cfg(**kw):
    base = {"encoding.hash_log2_table": 10, "encoding.hash_levels": 4}
    base.update(kw)
    return apply_overrides(MapperConfig(), base)


@pytest.mark.parametrize("trunk,act", [("mlp", "relu"), ("mlp", "softplus"), ("mlp", "sine"), ("siren", "relu")])
@pytest.mark.parametrize("kind", ["sdf", "nerf"])
def test_fields_shapes_and_gradients(kind, trunk, act):
    f = build_field(_cfg(**{"field.kind": kind, "field.trunk": trunk, "field.activation": act}))
    assert isinstance(f, SdfField if kind == "sdf" else RadianceField)
    x = torch.rand(32, 3)
    d = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1)
    out = f(x, d)
    assert isinstance(out, FieldOutput)
    assert out.value.shape == (32,) and out.geo.shape == (32, 15) and out.color.shape == (32, 3)
    assert ((out.color >= 0) & (out.color <= 1)).all()
    if kind == "nerf":
        assert (out.value >= 0).all()
    (out.value.sum() + out.color.sum()).backward()
    assert all(p.grad is not None for p in f.parameters() if p.requires_grad)
    assert f(x).color is None  # no direction -> no colour head


def test_siren_published_init():
    torch.manual_seed(0)
    net = siren(3, 256, 3, 1, omega0=30.0)
    first, hidden = net[0].linear.weight, net[1].linear.weight
    assert first.abs().max() <= 1 / 3 + 1e-6 and first.abs().max() > 0.9 / 3
    bound = math.sqrt(6 / 256) / 30
    assert hidden.abs().max() <= bound + 1e-7 and hidden.abs().max() > 0.9 * bound
    assert net[0].omega0 == 30.0
    # first-layer activations sin(30 (Wx + b)) are spread over many periods -> roughly arcsine distributed
    with torch.no_grad():
        h = net[0](torch.rand(4096, 3) * 2 - 1)
    assert 0.55 < float(h.std()) < 0.85


def test_encoding_and_network_parameter_groups_partition():
    f = build_field(_cfg())
    enc = f.encoding_parameters()
    net = f.network_parameters()
    assert len(enc) == 1 and enc[0].shape == (4 * 1024, 2)
    assert len(enc) + len(net) == len(list(f.parameters()))


@pytest.mark.parametrize("kind", ["fourier", "gaussian", "none"])
def test_field_with_other_encodings(kind):
    f = build_field(_cfg(**{"encoding.kind": kind}))
    assert f(torch.rand(8, 3)).value.shape == (8,)


# ----------------------------------------------------------------------------- fast value + gradient


def _close(a, b, tol):
    """|a - b| <= tol * max(1, max|b|)."""
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err <= tol * scale, f"max error {err:.3g} > {tol:g} x {scale:.3g}"


def _randomise(f, seed=0):
    """Non-trivial weights (a fresh hash table is ~1e-4, which would hide encoding errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in f.parameters():
            p.add_((torch.rand(p.shape, generator=g) * 2 - 1) * (0.5 if p.dim() == 2 and p.shape[1] <= 4 else 0.1))


@pytest.mark.parametrize("trunk,act", [("mlp", "relu"), ("mlp", "softplus"), ("mlp", "sine"), ("siren", "relu")])
@pytest.mark.parametrize("kind", ["sdf", "nerf"])
@pytest.mark.parametrize("enc", ["hashgrid", "hashgrid-ref", "fourier", "gaussian", "none"])
def test_fast_value_and_gradient_match_autograd(kind, trunk, act, enc):
    """fastquery (no autograd through the trunk) gives autograd's value, gradient and geo features.

    Hash grids (float32 tables): within 1e-5 relative. Other encodings: in float64 within 1e-9
    (the same math exactly), and in float32 within 1e-3 (random Fourier features into a SIREN put
    sin() arguments in the thousands: float32 rounding then depends on the order of products).
    """
    from neural_mapping import fastquery

    over = {"field.kind": kind, "field.trunk": trunk, "field.activation": act,
            "encoding.kind": "hashgrid" if enc.startswith("hashgrid") else enc}
    if enc == "hashgrid-ref":  # the pure-PyTorch analytic jacobian (the CUDA / no-kernel route)
        over["encoding.fast_cpu_kernel"] = False
    f = build_field(_cfg(**over)).eval()
    _randomise(f)
    assert fastquery.supports(f)
    x = torch.rand(3000, 3, generator=torch.Generator().manual_seed(1)) * 6 - 1
    tol = 1e-5 if enc.startswith("hashgrid") else 1e-3
    v0, g0, geo0 = fastquery.autograd_value_and_gradient(f, x)
    v1, g1, geo1 = fastquery.value_and_gradient(f, x, want_geo=True, block=1024)  # several blocks
    _close(v1, v0, tol)
    _close(g1, g0, tol)
    _close(geo1, geo0, tol)
    assert float(g0.abs().max()) > 1e-3  # a gradient that can be wrong
    with torch.no_grad():
        _close(fastquery.value(f, x, block=1024), f(x).value, tol)
    v3, g3, c3 = fastquery.value_gradient_color(f, x, block=1024)
    with torch.no_grad():
        c0 = fastquery.head_on_color(f, geo0, g0)
    _close(v3, v0, tol)
    _close(c3, c0, tol)
    v2, g2, geo2 = fastquery.value_and_gradient(f, x[:7])  # one block, no geo asked
    assert geo2 is None and v2.shape == (7,) and g2.shape == (7, 3)
    _close(g2, g0[:7], tol)
    if not enc.startswith("hashgrid"):
        f = f.double()
        v0, g0, geo0 = fastquery.autograd_value_and_gradient(f, x.double())
        v1, g1, geo1 = fastquery.value_and_gradient(f, x.double(), want_geo=True, block=1024)
        assert v1.dtype == torch.float64
        _close(v1, v0, 1e-9)
        _close(g1, g0, 1e-9)
        _close(geo1, geo0, 1e-9)


def test_fast_gradient_without_raw_xyz_matches_finite_differences():
    from neural_mapping import fastquery

    f = build_field(_cfg(**{"field.include_xyz": False})).eval()
    _randomise(f, seed=2)
    x = torch.rand(200, 3, generator=torch.Generator().manual_seed(4)) * 3
    v, g, _ = fastquery.value_and_gradient(f, x)
    h = 1e-4
    with torch.no_grad():
        fd = torch.stack([(f(x + h * e).value - f(x - h * e).value) / (2 * h) for e in torch.eye(3)], dim=1)
    # piecewise trilinear encoding and relu kinks: most points, not all, are away from a cell face
    ok = ((fd - g).abs() <= 1e-2 * (1 + g.abs())).all(dim=1).float().mean()
    assert ok > 0.7, f"only {ok:.2f} of points agree with finite differences"
    assert float(g.abs().max()) > 1.0


def test_unsupported_trunk_falls_back():
    from neural_mapping import fastquery

    f = build_field(_cfg())
    assert fastquery.supports(f)
    f.trunk[1] = torch.nn.Tanh()  # an activation the fast path does not know
    assert not fastquery.supports(f)
    with pytest.raises(ValueError):
        fastquery.value_and_gradient(f, torch.rand(4, 3))
    x = torch.rand(40, 3)
    v, g, geo = fastquery.autograd_value_and_gradient(f, x)
    assert g.shape == (40, 3) and geo.shape == (40, 15)
    with torch.no_grad():
        _close(fastquery.value(f, x, block=16), f(x).value, 1e-6)  # value: blocks of field(x)
        c0 = fastquery.head_on_color(f, geo, g)
    v1, g1, c1 = fastquery.value_gradient_color(f, x, block=16)  # the autograd route per block
    _close(g1, g, 1e-6)
    _close(c1, c0, 1e-6)


def test_mapper_query_matches_autograd_reference():
    """Mapper.query's sdf, gradient and colour equal the autograd route on the same weights."""
    from neural_mapping import fastquery
    from neural_mapping.config import apply_overrides
    from neural_mapping.mapper import Mapper

    m = Mapper(apply_overrides(MapperConfig(), {"device": "cpu", "encoding.hash_log2_table": 12,
                                                "encoding.hash_levels": 8}))
    _randomise(m.field, seed=5)
    pts = (torch.rand(5000, 3, generator=torch.Generator().manual_seed(6)) * 7 - 3)
    r = m.query(pts.numpy(), want_gradient=True, want_color=True, chunk=2048)
    m.field.eval()
    v, g, geo = fastquery.autograd_value_and_gradient(m.field, pts)
    with torch.no_grad():
        col = m.field.color(geo, -torch.nn.functional.normalize(g, dim=-1))
    _close(torch.from_numpy(r.sdf), v, 1e-5)
    _close(torch.from_numpy(r.gradient), g, 1e-5)
    _close(torch.from_numpy(r.color), col, 1e-5)
    assert float(g.abs().max()) > 0.1
    _close(torch.from_numpy(m.query(pts.numpy(), chunk=3000).sdf), v, 1e-5)  # the value-only path


def test_fast_queries_of_no_points_are_empty():
    from neural_mapping import fastquery

    f = build_field(_cfg())
    none = torch.zeros(0, 3)
    assert fastquery.value(f, none).shape == (0,)
    v, g, geo = fastquery.value_and_gradient(f, none)
    assert v.shape == (0,) and g.shape == (0, 3) and geo is None
    v, g, c = fastquery.value_gradient_color(f, none)
    assert v.shape == (0,) and g.shape == (0, 3) and c.shape == (0, 3)
