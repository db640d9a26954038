"""neural_mapping.objectives: the registry, each kind's rules (occupancy, surface value, rendering)
and training through the objective, on tiny analytic scenes."""

import numpy as np
import pytest
import torch
from torch import nn

from analytic_scenes import plane_frames, sphere_frames
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.fields import RadianceField, SdfField, build_field
from neural_mapping.mapper import Mapper
from neural_mapping.objectives import OBJECTIVES, NerfObjective, Objective, SdfObjective, build_objective

TINY = {"device": "cpu", "train.rays_per_step": 256, "render.n_stratified": 8, "render.n_surface": 8,
        "encoding.hash_log2_table": 12, "encoding.hash_levels": 4, "encoding.hash_finest_m": 0.05,
        "field.hidden": 32, "render.render_samples": 16}
CLASSES = {"sdf": SdfObjective, "nerf": NerfObjective}


def tiny_cfg(kind="sdf", **kw) -> MapperConfig:
    return apply_overrides(MapperConfig(), {**TINY, "field.kind": kind, **kw})


def tiny_mapper(kind="sdf", n=4, **kw) -> Mapper:
    frames, _ = sphere_frames(n=n, H=24, W=32) if kind == "sdf" else plane_frames(n=n, H=24, W=32)
    m = Mapper(tiny_cfg(kind, **kw))
    for f in frames:
        assert m.add_frame(f)
    return m


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize("kind", ["sdf", "nerf"])
def test_each_kind_builds_its_objective_on_the_maps_field_and_generator(kind):
    cfg = tiny_cfg(kind)
    field, gen = build_field(cfg), torch.Generator()
    obj = build_objective(cfg, field, gen)
    assert type(obj) is CLASSES[kind] and isinstance(obj, Objective) and obj.kind == kind
    assert obj.field is field and obj.generator is gen and obj.cfg is cfg
    m = Mapper(cfg)
    assert type(m.objective) is CLASSES[kind]
    assert m.objective.field is m.field and m.objective.generator is m.generator and m.objective.cfg is m.cfg


def test_registry_refuses_an_unknown_kind_and_a_field_of_another_kind():
    cfg = tiny_cfg("sdf")
    cfg.field.kind = "occupancy"  # past the config's own check
    with pytest.raises(ValueError, match=r"no objective for 'occupancy' \(known: nerf, sdf\)"):
        build_objective(cfg, SdfField(tiny_cfg("sdf")), torch.Generator())
    with pytest.raises(ValueError, match="field.kind is 'sdf' but the field is a 'nerf' field"):
        build_objective(tiny_cfg("sdf"), RadianceField(tiny_cfg("nerf")), torch.Generator())


def test_a_third_kind_is_one_registry_entry(monkeypatch):
    class Toy(SdfObjective):
        kind = "toy"

    class ToyField(nn.Module):
        kind = "toy"

    monkeypatch.setitem(OBJECTIVES, "toy", Toy)
    cfg = tiny_cfg()
    cfg.field.kind = "toy"
    assert type(build_objective(cfg, ToyField(), torch.Generator())) is Toy


def test_objective_is_rebuilt_with_the_field():
    m = Mapper(tiny_cfg("sdf"))
    first = m.objective
    m.reset()
    assert m.objective is not first and m.objective.field is m.field and m.objective.generator is m.generator
    other = Mapper(tiny_cfg("nerf"))
    m.load_state_dict(other.state_dict())  # another config: the field is rebuilt, a nerf one
    assert type(m.objective) is NerfObjective and m.objective.field is m.field
    assert isinstance(m.field, RadianceField)


# ----------------------------------------------------------------------------- values


def test_sdf_occupancy_is_half_on_the_surface_and_falls_outwards():
    obj = build_objective(tiny_cfg("sdf"), build_field(tiny_cfg("sdf")), torch.Generator())
    v = np.array([-1e6, -0.1, -0.01, 0.0, 0.01, 0.1, 1e6])
    occ = obj.occupancy_from_value(v)
    assert occ.dtype == np.float32 and np.all(np.isfinite(occ))
    assert occ[3] == 0.5
    assert np.all(np.diff(occ) <= 0) and np.all(np.diff(occ[1:-1]) < 0)
    assert occ[0] == 1.0 and occ[-1] == 0.0
    m = Mapper(tiny_cfg("sdf"))
    np.testing.assert_array_equal(m.occupancy_from_value(v), m.objective.occupancy_from_value(v))


def test_nerf_occupancy_is_the_opacity_of_one_voxel():
    cfg = tiny_cfg("nerf")
    obj = build_objective(cfg, build_field(cfg), torch.Generator())
    res = cfg.occupancy.resolution_m
    d = np.array([-5.0, 0.0, 1.0, np.log(2) / res, 100.0, 1e9])
    occ = obj.occupancy_from_value(d)
    assert occ[0] == 0.0 and occ[1] == 0.0  # no (or negative) density: empty
    np.testing.assert_allclose(occ[3], 0.5, atol=1e-6)
    assert np.all(np.diff(occ[1:]) > 0)  # more density, more occupied
    assert occ[-1] == 1.0


def test_surface_value_is_negative_inside_positive_outside():
    sdf_cfg, nerf_cfg = tiny_cfg("sdf"), tiny_cfg("nerf")
    sdf = build_objective(sdf_cfg, build_field(sdf_cfg), torch.Generator())
    vals = np.array([-0.2, 0.0, 0.3], np.float64)
    s = sdf.surface_value(vals)
    assert s.dtype == np.float32 and np.array_equal(s, vals.astype(np.float32))  # the sdf itself
    nerf = build_objective(nerf_cfg, build_field(nerf_cfg), torch.Generator())
    half = np.log(2) / nerf_cfg.occupancy.resolution_m  # the density at which a voxel is half opaque
    dens = np.array([1e4, half, 0.0])  # dense (inside), on the surface, empty (outside)
    s = nerf.surface_value(dens, occupancy=np.full(3, 0.5, np.float32))  # the query's occupancy is not used
    assert s.dtype == np.float32
    assert s[0] < 0 and abs(s[1]) < 1e-6 and s[2] == 0.5


# ----------------------------------------------------------------------------- samples, training, rendering


def test_sample_t_is_sorted_and_draws_only_from_the_maps_generator():
    m = tiny_mapper("sdf", n=2)
    batch = m.keyframes.sample(64, 0.5, generator=torch.Generator().manual_seed(0))
    global_rng = torch.get_rng_state()
    state = m.generator.get_state()
    t = m.objective.sample_t(batch, batch.depth - 0.05)
    assert t.shape == (64, 16) and torch.all(t[:, 1:] >= t[:, :-1])
    assert torch.all(t[:, :8].min(1).values >= 0)  # stratified part begins at near
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert not torch.equal(m.generator.get_state(), state)  # the draws came from the map's generator
    m.generator.set_state(state)
    assert torch.equal(m.objective.sample_t(batch, batch.depth - 0.05), t)


@pytest.mark.parametrize("kind", ["sdf", "nerf"])
def test_training_through_the_objective_lowers_its_loss(kind):
    m = tiny_mapper(kind)
    batch = m.keyframes.sample(512, 0.25, generator=torch.Generator().manual_seed(1))

    def fixed_loss():  # the same rays and samples each time: an objective with a freshly seeded generator
        obj = build_objective(m.cfg, m.field, torch.Generator().manual_seed(2))
        total, terms, ray_loss, n = obj.loss(batch)
        assert ray_loss.shape == (512,) and n >= 512 * 16 and total.requires_grad
        return float(total.detach())

    m.field.train()
    before = fixed_loss()
    global_rng = torch.get_rng_state()
    st = m.step(25)
    assert torch.equal(torch.get_rng_state(), global_rng)  # training draws nothing from torch's RNG
    assert st.rays == 25 * 256
    after = fixed_loss()
    assert after < {"sdf": 0.5, "nerf": 0.8}[kind] * before, (before, after)  # measured 0.34, 0.69


@pytest.mark.parametrize("kind", ["sdf", "nerf"])
def test_render_rays_shapes_and_no_random_draws(kind):
    m = tiny_mapper(kind, n=2)
    o = torch.zeros(5, 3)
    o[:, 2] = 1.0
    d = torch.tensor([[0.0, 0.0, -1.0]] * 5) + torch.linspace(-0.2, 0.2, 5)[:, None] * torch.tensor([1.0, 0, 0])
    t_in, t_out = torch.full((5,), 0.1), torch.tensor([2.0, 2.0, 0.05, 2.0, 2.0])  # ray 2 misses (t_out < t_in)
    global_rng, state = torch.get_rng_state(), m.generator.get_state()
    c, z, a = m.objective.render_rays(o, d, t_in, t_out)
    assert c.shape == (5, 3) and z.shape == (5,) and a.shape == (5,)
    assert not c.requires_grad and z[2] == 0 and a[2] == 0
    assert torch.all((a >= 0) & (a <= 1)) and torch.all((c >= 0) & (c <= 1))
    assert torch.equal(torch.get_rng_state(), global_rng) and torch.equal(m.generator.get_state(), state)
    c2, z2, a2 = m.objective.render_rays(o, d, t_in, t_out)
    assert torch.equal(c, c2) and torch.equal(z, z2) and torch.equal(a, a2)
