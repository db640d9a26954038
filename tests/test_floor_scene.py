"""The synthetic floor (neural_mapping/io/floor_scene.py, `synth --scene floor`): a 40 x 20 m site
whose walk enters every room through its door, rendered with the sensor model, with its mesh."""

from __future__ import annotations

import numpy as np
import open3d as o3d

from neural_mapping.cli import main
from neural_mapping.io.floor_scene import SITE_HI, SITE_LO, _rooms, floor_parts, floor_trajectory


def test_synth_floor_writes_valid_frames_and_a_mesh_spanning_the_site(tmp_path, capsys):
    out = tmp_path / "floor"
    assert main(["synth", "--scene", "floor", "--out", str(out), "--frames", "24", "--size", "48", "36",
                 "--sensor", "kinect"]) == 0
    assert "wrote 24 frames 48x36" in capsys.readouterr().out
    from neural_mapping.io.sources import open_source

    frames = list(open_source(str(out)))
    assert len(frames) == 24
    fill = []
    for f in frames:
        f.validate()
        assert f.depth_m.shape == (36, 48)
        valid = f.depth_m > 0
        assert valid.mean() > 0.3  # indoors every ray hits; the kinect model drops edges, far and random pixels
        fill.append(valid.mean())
        assert float(f.depth_m[valid].max()) < 60.0  # the corridor is 40 m long (plus the noise at 40 m)
    assert np.mean(fill) > 0.6
    cams = np.array([f.T_WC[:3, 3] for f in frames])
    assert np.all((cams > SITE_LO) & (cams < SITE_HI))
    mesh = o3d.io.read_triangle_mesh(str(out / "gt_mesh.ply"))
    bb = mesh.get_axis_aligned_bounding_box()
    np.testing.assert_allclose(bb.get_min_bound(), [-0.1, -0.1, -0.1], atol=1e-6)
    np.testing.assert_allclose(bb.get_max_bound(), [40.1, 20.1, 2.7], atol=1e-6)
    assert len(mesh.triangles) > 100_000 and mesh.has_vertex_colors()


def test_the_walk_visits_every_room_through_its_door_and_never_enters_a_solid():
    T = floor_trajectory(4000)
    cams = T[:, :3, 3]
    step = np.linalg.norm(np.diff(cams, axis=0), axis=1)
    assert 250 < step.sum() < 400 and step.max() < 0.12  # several thousand frames, a few cm apart
    for name, (lo, hi) in floor_parts().items():  # at least 15 cm from every wall and piece of furniture
        assert not np.any(np.all((cams > lo - 0.15) & (cams < hi + 0.15), axis=1)), name
    for i, rlo, rhi, _ in _rooms():
        inside = np.all((cams[:, :2] > rlo + 0.5) & (cams[:, :2] < rhi - 0.5), axis=1)
        assert inside.sum() > 50, f"room {i} is not visited"
    # rotations are proper and the camera looks roughly level (never straight up or down)
    R = T[:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    assert np.abs(R[:, 2, 2]).max() < 0.5
