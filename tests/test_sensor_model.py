"""Depth sensor models: noise std against the published formulas, dropouts at depth edges."""

import numpy as np
import pytest

from neural_mapping.io.sensor import SENSORS, apply_sensor, depth_edges


@pytest.mark.parametrize("z", [1.0, 3.0])
@pytest.mark.parametrize("name,formula", [
    ("kinect", lambda z: 0.0012 + 0.0019 * (z - 0.4) ** 2),  # Nguyen et al. 2012
    ("realsense", lambda z: z * z * 0.1 / (224.0 * 0.05)),  # D435: z^2 * subpixel / (f * baseline)
])
def test_axial_noise_std_on_a_flat_wall_matches_the_formula(name, formula, z):
    wall = np.full((200, 200), z, np.float32)  # a fronto-parallel wall: no edges
    noisy = apply_sensor(wall, name, np.random.default_rng(0))
    ok = noisy > 0
    assert ok.mean() > 0.95  # only random dropouts
    std = float(np.std(noisy[ok].astype(np.float64) - z))
    assert std == pytest.approx(formula(z), rel=0.03)
    assert abs(float(np.mean(noisy[ok] - z))) < 3 * formula(z) / np.sqrt(ok.sum())  # unbiased


def test_realsense_is_about_two_percent_at_two_metres():
    assert SENSORS["realsense"].sigma_m(2.0) / 2.0 == pytest.approx(0.018, abs=0.002)


def test_dropouts_concentrate_at_depth_edges():
    d = np.full((120, 160), 3.0, np.float32)
    d[:, 80:] = 1.0  # a step of 2 m at column 80
    edges = depth_edges(d)
    assert edges[:, 79:81].all() and edges.sum() == 2 * 120
    rng = np.random.default_rng(1)
    lost_edge, lost_rest = [], []
    for _ in range(20):
        noisy = apply_sensor(d, "kinect", rng)
        lost_edge.append((noisy[edges] == 0).mean())
        lost_rest.append((noisy[~edges] == 0).mean())
    assert np.mean(lost_edge) > 0.4 and np.mean(lost_rest) < 0.02
    assert apply_sensor(d, "clean", rng).tolist() == d.tolist()


def test_invalid_depth_stays_invalid():
    d = np.zeros((40, 40), np.float32)
    d[10:30, 10:30] = 2.0
    noisy = apply_sensor(d, "realsense", np.random.default_rng(2))
    assert (noisy[d == 0] == 0).all() and np.isfinite(noisy).all()


def test_synthetic_sequence_with_a_sensor_model():
    from neural_mapping.io.synthetic import synthetic_sequence

    clean = synthetic_sequence(n_frames=2, width=32, height=24, seed=0)
    noisy = synthetic_sequence(n_frames=2, width=32, height=24, seed=0, sensor="kinect")
    a, b = clean.frames[1].depth_m, noisy.frames[1].depth_m
    both = (a > 0) & (b > 0)
    diff = np.abs(a[both] - b[both])
    assert 0 < np.median(diff) < 0.05 and (b == 0).sum() >= (a == 0).sum()
