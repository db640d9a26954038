"""The reflection-aware colour head: reflection, IDE attenuation, range, normals, training."""

import math

import numpy as np
import pytest
import torch

from neural_mapping.color_heads import IntegratedDirEncoding, ReflectiveColorHead, ide_attenuation, reflect
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.fields import build_field


def _cfg(**kw):
    base = {"device": "cpu", "encoding.hash_log2_table": 10, "encoding.hash_levels": 4, "field.color_head": "reflective"}
    base.update(kw)
    return apply_overrides(MapperConfig(), base)


def test_reflection_by_hand():
    d = torch.tensor([[1.0, 0.0, -1.0]]) / math.sqrt(2)  # down onto the floor z = 0
    n = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(reflect(d, n), torch.tensor([[1.0, 0.0, 1.0]]) / math.sqrt(2))
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(50, 3, generator=g), dim=-1)
    n = torch.nn.functional.normalize(torch.randn(50, 3, generator=g), dim=-1)
    r = reflect(d, n)
    want = d - 2 * (d * n).sum(-1, keepdim=True) * n
    assert torch.allclose(r, want) and torch.allclose(r.norm(dim=-1), torch.ones(50))
    assert torch.allclose((r * n).sum(-1), -(d * n).sum(-1), atol=1e-6)  # the normal component flips


def test_ide_attenuation_values():
    rough = torch.tensor([[0.5], [0.0]])
    a = ide_attenuation(rough, 4)
    assert a.shape == (2, 25)
    # kappa = 1 / roughness = 2: band l is scaled by exp(-l (l + 1) / 4)
    expect = [math.exp(-l * (l + 1) / 4.0) for l in range(5) for _ in range(2 * l + 1)]
    assert torch.allclose(a[0], torch.tensor(expect))
    assert torch.allclose(a[1], torch.ones(25))  # a perfect mirror keeps every band
    ide = IntegratedDirEncoding(4)
    w = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(ide(w, torch.tensor([[0.5]])), ide.sh(w) * a[:1])


def test_head_output_in_unit_range_and_gradients():
    torch.manual_seed(0)
    head = ReflectiveColorHead(15, 32, 4)
    geo = torch.randn(200, 15) * 5
    d = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    n = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    c = head(geo, d, n)
    assert c.shape == (200, 3) and bool(((c >= 0) & (c <= 1)).all())
    c.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("kind", ["sdf", "nerf"])
def test_field_normal_points_out_of_a_learned_plane(kind):
    f = build_field(_cfg(**{"field.kind": kind, "encoding.kind": "none"}))
    with torch.no_grad():  # a linear field of z: sdf = z (normal +z); density logit = -z (denser below: normal +z)
        for m in f.trunk:
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_()
                m.bias.zero_()
        lin = [m for m in f.trunk if isinstance(m, torch.nn.Linear)]
        lin[0].weight[0, 2] = 1.0 if kind == "sdf" else -1.0
        lin[0].bias[0] = 10.0  # keeps the relu unit positive
        for m in lin[1:]:
            m.weight[0, 0] = 1.0
    with torch.no_grad():
        n = f.normal(torch.rand(10, 3))
    assert torch.allclose(n, torch.tensor([0.0, 0.0, 1.0]).expand(10, 3), atol=1e-5)


@pytest.mark.parametrize("kind", ["sdf", "nerf"])
def test_training_with_the_reflective_head_works(kind):
    from analytic_scenes import sphere_frames

    from neural_mapping.mapper import Mapper

    cfg = _cfg(**{"field.kind": kind, "train.rays_per_step": 256, "render.n_stratified": 6, "render.n_surface": 6,
                  "field.hidden": 32, "encoding.hash_finest_m": 0.05})
    torch.manual_seed(0)
    frames, _ = sphere_frames(n=6, H=24, W=32)
    m = Mapper(cfg)
    for f in frames[1:]:
        m.add_frame(f)
    m.step(3)
    first = dict(m.last_terms.as_dict())
    m.step(25)
    last = m.last_terms.as_dict()
    assert np.isfinite(m.stats.last_loss) and last["color"] < first["color"], (first, last)
    f = frames[0]
    r = m.render(f.T_WC, f.K, f.height, f.width)
    assert np.isfinite(r.color).all() and r.color.min() >= 0 and r.color.max() <= 1


def test_plain_head_is_the_default_and_unchanged():
    cfg = apply_overrides(MapperConfig(), {"encoding.hash_log2_table": 10, "encoding.hash_levels": 4})
    assert cfg.field.color_head == "plain"
    f = build_field(cfg)
    torch.manual_seed(1)
    geo, d = torch.randn(8, 15), torch.nn.functional.normalize(torch.randn(8, 3), dim=-1)
    want = torch.sigmoid(f.color_head(torch.cat([geo, f.dir_enc(d)], -1)))
    assert torch.equal(f.color(geo, d), want) and torch.equal(f.color(geo, d, torch.rand(8, 3)), want)
