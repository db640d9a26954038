import pytest
import torch

from neural_mapping.config import TrainConfig
from neural_mapping.losses import (color_loss, depth_loss, eikonal_loss, free_space_loss, psnr, sdf_band_loss,
                                   weighted_total)


def test_sdf_band_loss_by_hand():
    # depth 2.0, truncation 0.1: samples at 1.95 (target .05), 2.08 (target -.08) in band; 1.5 and 2.5 outside
    t = torch.tensor([[1.5, 1.95, 2.08, 2.5]])
    sdf = torch.tensor([[9.0, 0.10, -0.10, 9.0]])
    got = sdf_band_loss(sdf, t, torch.tensor([2.0]), 0.1)
    want = ((0.10 - 0.05) ** 2 + (-0.10 + 0.08) ** 2) / 2
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_free_space_loss_by_hand():
    # depth 2.0, tr 0.1, |dir| = 1.5; samples at 1.0 (ahead 1.0, bound 1.5) and 1.8 (ahead .2, bound .3)
    t = torch.tensor([[1.0, 1.8, 1.97]])
    sdf = torch.tensor([[2.0, 0.05, 5.0]])  # 1st above its bound by .5; 2nd below tr by .05; 3rd in band: ignored
    got = free_space_loss(sdf, t, torch.tensor([2.0]), 0.1, torch.tensor([1.5]))
    assert float(got) == pytest.approx((0.5**2 + 0.05**2) / 2, rel=1e-4)
    ok = free_space_loss(torch.tensor([[1.0, 0.2, 0.0]]), t, torch.tensor([2.0]), 0.1, torch.tensor([1.5]))
    assert float(ok) == 0.0


def test_eikonal_depth_color_psnr_by_hand():
    g = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    assert float(eikonal_loss(g)) == pytest.approx((4.0**2 + 0.0) / 2)
    assert float(depth_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 2.0, 0.0]),
                            torch.tensor([True, True, False]))) == pytest.approx(0.25)
    assert float(color_loss(torch.tensor([[1.0, 0, 0]]), torch.tensor([[0.0, 0, 0]]))) == pytest.approx(1 / 3)
    assert psnr(0.01) == pytest.approx(20.0)


def test_weighted_total_uses_config_weights():
    cfg = TrainConfig(w_sdf=10.0, w_free=2.0, w_color=0.0)
    tot, terms = weighted_total(cfg, sdf=torch.tensor(0.5), free=torch.tensor(0.25), color=torch.tensor(7.0))
    assert float(tot) == pytest.approx(10 * 0.5 + 2 * 0.25)
    assert terms.sdf == 0.5 and terms.free == 0.25 and terms.color == 7.0 and terms.depth == 0.0
    with pytest.raises(ValueError):
        weighted_total(cfg, color=torch.tensor(1.0))


def test_sdf_band_loss_back_band_is_shorter():
    # depth 2.0, truncation 0.1, back 0.02: the sample 8 cm behind the surface is no longer supervised
    t = torch.tensor([[1.95, 2.01, 2.08]])
    sdf = torch.tensor([[0.10, 0.0, 5.0]])
    got = sdf_band_loss(sdf, t, torch.tensor([2.0]), 0.1, back=0.02)
    assert float(got) == pytest.approx(((0.10 - 0.05) ** 2 + (0.0 + 0.01) ** 2) / 2, rel=1e-4)
    sym = sdf_band_loss(sdf, t, torch.tensor([2.0]), 0.1)  # default: symmetric band
    assert float(sym) == pytest.approx(((0.10 - 0.05) ** 2 + (0.0 + 0.01) ** 2 + (5.0 + 0.08) ** 2) / 3, rel=1e-4)


def test_free_space_loss_behind_prior():
    # depth 2.0, tr 0.1, back 0.02: the sample 5 cm behind the surface must not be free (sdf <= 0);
    # 1 cm behind is the SDF band's, 15 cm behind is unknown: both ignored here
    t = torch.tensor([[1.0, 2.01, 2.05, 2.15]])
    sdf = torch.tensor([[1.0, 0.5, 0.03, 0.5]])
    got = free_space_loss(sdf, t, torch.tensor([2.0]), 0.1, torch.tensor([1.0]), back=0.02)
    assert float(got) == pytest.approx(0.03**2 / 2, rel=1e-4)
    assert float(free_space_loss(sdf, t, torch.tensor([2.0]), 0.1, torch.tensor([1.0]))) == 0.0  # no prior
    inside = free_space_loss(torch.tensor([[1.0, 0.5, -0.03, 0.5]]), t, torch.tensor([2.0]), 0.1, torch.tensor([1.0]),
                             back=0.02)
    assert float(inside) == 0.0


def test_sdf_band_loss_back_band_per_ray():
    # two rays at depth 2.0, truncation 0.1; ray 0 keeps the full band behind the surface, ray 1 (near
    # a silhouette) only 1 cm: its sample 5 cm behind the surface drops out of the mean
    t = torch.tensor([[1.95, 2.05], [1.95, 2.05]])
    sdf = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    got = sdf_band_loss(sdf, t, torch.tensor([2.0, 2.0]), 0.1, back=torch.tensor([[0.1], [0.01]]))
    assert float(got) == pytest.approx(3 * 0.05**2 / 3, rel=1e-4)
