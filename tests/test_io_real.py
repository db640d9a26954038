"""The real clips in ../shared/data load with their documented intrinsics and plausible geometry."""

import numpy as np
import open3d as o3d
import pytest

from neural_mapping.camera import backproject_depth
from neural_mapping.io.sources import open_source


@pytest.mark.parametrize("clip,first,extent", [("sun3d_frag1", 935, (4.8, 1.9, 3.0)),
                                               ("sun3d_frag2", 3160, (6.2, 1.2, 2.1))])
def test_sun3d_clips(shared_data, clip, first, extent):
    src = open_source(shared_data / clip)
    assert src.fmt == "3dmatch" and len(src) == 50
    f = next(iter(src))
    assert f.width == 640 and f.height == 480
    assert np.allclose(f.K, [[570.342205, 0, 320], [0, 570.342205, 240], [0, 0, 1]])
    assert f.stamp_ns == round(first * 1e9 / 30)  # frame number / 30 fps
    assert 0.5 < f.n_valid_depth / (640 * 480) <= 1.0
    pts_W = backproject_depth(f.depth_m, f.K, f.T_WC, stride=4)
    ext = np.percentile(pts_W, 99, axis=0) - np.percentile(pts_W, 1, axis=0)
    # one frame sees part of the fused clip: no axis beyond the clip's extent (+20 %), none degenerate
    assert np.all(ext < np.array(extent) * 1.2) and np.all(ext > 0.3), ext
    d = f.depth_m[f.depth_m > 0]
    assert 0.4 < d.min() and d.max() < 10.0


def test_replica_frames_land_on_the_mesh(shared_data):
    root = shared_data / "replica_office0_4f"
    src = open_source(root)
    assert src.fmt == "replica" and len(src) == 4 and src.depth_scale == 6553.5
    mesh = o3d.io.read_triangle_mesh(str(root / "office0_mesh.ply"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    for f in src:
        assert (f.width, f.height) == (1200, 680)
        assert np.allclose(f.K, [[600, 0, 599.5], [0, 600, 339.5], [0, 0, 1]])
        pts_W = backproject_depth(f.depth_m, f.K, f.T_WC, stride=10)
        d = scene.compute_distance(o3d.core.Tensor(pts_W.astype(np.float32))).numpy()
        # rendered depth of this mesh: metres = raw / 6553.5, poses camera-to-world
        assert np.median(d) < 0.005 and np.percentile(d, 95) < 0.02
    assert src.skipped == 0
