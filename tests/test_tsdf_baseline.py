"""The TSDF baseline: a plane within a voxel, invalid depth changes nothing, its ESDF is a distance."""

import numpy as np
import pytest

from neural_mapping.camera import intrinsics
from neural_mapping.frame import Frame
from neural_mapping.tsdf_baseline import TsdfFusion


def _wall_frame(z=2.0, W=80, H=60):
    K = intrinsics(60.0, 60.0, (W - 1) / 2, (H - 1) / 2)
    return Frame(rgb=np.full((H, W, 3), 128, np.uint8), depth_m=np.full((H, W), z, np.float32), K=K,
                 T_WC=np.eye(4), stamp_ns=0)


def test_plane_within_a_voxel_and_esdf_is_the_distance():
    fu = TsdfFusion(0.04)
    f = _wall_frame()
    fu.integrate(f)
    fu.integrate(f)
    v = np.asarray(fu.mesh().vertices)
    assert len(v) > 100 and np.abs(v[:, 2] - 2.0).max() < 0.04
    pts = np.array([[0.0, 0.0, 1.5], [0.1, -0.1, 1.0], [0.0, 0.0, 0.5]])
    d, g = fu.esdf(pts)
    assert d == pytest.approx(2.0 - pts[:, 2], abs=0.05)
    assert (g[:, 2] < -0.9).all()  # pointing away from the wall, towards the camera
    col, dep = fu.render(f.T_WC, f.K, 60, 80)
    assert np.nanmedian(np.abs(dep[dep > 0] - 2.0)) < 0.02 and col.max() > 0.3


def test_invalid_depth_changes_nothing_outside_valid_rays():
    a, b = TsdfFusion(0.04), TsdfFusion(0.04)
    f = _wall_frame()
    a.integrate(f)
    bad = _wall_frame()
    bad.depth_m[:, 40:] = np.nan
    bad.depth_m[:10] = 0.0
    bad.depth_m[10:20, :40] = 1e4  # beyond max depth
    b.integrate(bad)
    va, vb = np.asarray(a.mesh().vertices), np.asarray(b.mesh().vertices)
    assert 0 < len(vb) < len(va) and vb[:, 0].max() < 0.1  # only the left half (x < 0) was fused
    assert np.abs(vb[:, 2] - 2.0).max() < 0.04
