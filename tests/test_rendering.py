import math

import pytest
import torch

from neural_mapping import rendering as rd


def test_volume_rendering_weights_by_hand():
    # one ray, unit direction; samples at t = 0, 1, 3 with densities 0.5, 1, 2
    t = torch.tensor([[0.0, 1.0, 3.0]])
    sigma = torch.tensor([[0.5, 1.0, 2.0]])
    alpha = rd.alpha_from_density(sigma, t, torch.tensor([1.0]))
    a0, a1, a2 = 1 - math.exp(-0.5 * 1), 1 - math.exp(-1.0 * 2), 1.0  # last delta is "infinite"
    assert alpha[0].tolist() == pytest.approx([a0, a1, a2], abs=1e-6)
    w = rd.weights_from_alpha(alpha)
    want = [a0, (1 - a0) * a1, (1 - a0) * (1 - a1) * a2]
    assert w[0].tolist() == pytest.approx(want, abs=1e-6)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    depth = rd.composite(w, t)
    assert float(depth) == pytest.approx(sum(wi * ti for wi, ti in zip(want, [0, 1, 3])), abs=1e-6)
    col = rd.composite(w, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]]))
    assert col[0].tolist() == pytest.approx(want, abs=1e-6)


def test_alpha_uses_euclidean_step_length():
    t = torch.tensor([[0.0, 1.0]])
    a = rd.alpha_from_density(torch.tensor([[1.0, 1.0]]), t, torch.tensor([2.0]))  # |dir| = 2
    assert float(a[0, 0]) == pytest.approx(1 - math.exp(-2.0), abs=1e-6)


def test_stratified_samples_one_per_bin():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    t = rd.sample_stratified(near, far, 4)
    edges0 = torch.linspace(1, 3, 5)
    assert ((t[0] >= edges0[:-1]) & (t[0] <= edges0[1:])).all()
    mid = rd.sample_stratified(near, far, 4, perturb=False)
    assert mid[1].tolist() == pytest.approx([2.5, 3.5, 4.5, 5.5])


def test_surface_samples_around_depth():
    torch.manual_seed(0)
    t = rd.sample_surface(torch.tensor([2.0]), 20000, 0.05)
    assert float(t.mean()) == pytest.approx(2.0, abs=2e-3)
    assert float(t.std()) == pytest.approx(0.05, rel=0.05)


def test_sample_pdf_concentrates_on_heavy_bin():
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    w = torch.tensor([[0.0, 1.0, 0.0]])
    t = rd.sample_pdf(edges, w, 100, perturb=False)
    assert ((t >= 0.99) & (t <= 2.01)).float().mean() > 0.98


def test_ray_aabb():
    o = torch.tensor([[-2.0, 0.0, 0.0], [-2.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t_in, t_out = rd.ray_aabb(o, d, torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1]))
    assert t_in[0].item() == pytest.approx(1.0) and t_out[0].item() == pytest.approx(3.0)
    assert t_out[1] < t_in[1]  # misses


def test_neus_weights_peak_at_zero_crossing():
    # planar SDF along a ray hitting a wall at t = 1: sdf = 1 - t
    t = torch.linspace(0, 2, 201)[None]
    sdf = 1.0 - t
    w = rd.weights_from_alpha(rd.neus_alpha(sdf, 0.02))
    d = float((w * t).sum() / w.sum())
    assert d == pytest.approx(1.0, abs=0.01)
    assert float(w.sum()) > 0.99  # opaque
    wb = rd.bell_weights(sdf, 0.05)
    assert float((wb * t).sum()) == pytest.approx(1.0, abs=0.01)


def test_sphere_trace_analytic_sphere():
    def sdf(p):
        return p.norm(dim=-1) - 0.5

    o = torch.tensor([[0.0, 0.0, -2.0], [0.3, 0.0, -2.0], [0.0, 2.0, -2.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t, hit = rd.sphere_trace(sdf, o, d, torch.zeros(3), torch.full((3,), 5.0), n_steps=100, eps=1e-4)
    assert hit.tolist() == [True, True, False]
    assert t[0].item() == pytest.approx(1.5, abs=1e-3)
    assert t[1].item() == pytest.approx(2.0 - math.sqrt(0.25 - 0.09), abs=1e-3)
