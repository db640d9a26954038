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
