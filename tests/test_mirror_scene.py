"""The mirror scene: a real one-bounce reflection, mirror depth on its plane, no geometry behind it."""

import numpy as np

from neural_mapping.io.mirror_scene import MIRROR_GAIN, MirrorRenderer, mirror_room, phantom_region
from neural_mapping.io.synthetic import Renderer, default_K, look_at_T_WC, synthetic_sequence


def test_mirror_pixel_shows_what_the_reflected_ray_sees():
    mesh, parts = mirror_room()
    K = default_K(31, 31)
    eye, centre = np.array([0.05, 0.5, 1.25]), np.array([0.05, 2.0, 1.25])
    rgb, depth = MirrorRenderer(mesh, parts).render(look_at_T_WC(eye, centre), K, 31, 31)
    assert abs(depth[15, 15] - 1.5) < 1e-4  # the mirror's own surface, not the reflected distance
    # head-on: the reflected ray goes back along -y from the mirror; a plain camera there sees it
    back, _ = Renderer(mesh).render(look_at_T_WC(centre - [0, 1e-3, 0], centre - [0, 1.0, 0]), K, 31, 31)
    want = MIRROR_GAIN * back[15, 15].astype(float)
    assert np.abs(rgb[15, 15].astype(float) - want).max() <= 1.0 + 1e-9, (rgb[15, 15], want)


def test_mirror_is_a_flat_quad_with_nothing_behind_it():
    mesh, parts = mirror_room()
    V = np.asarray(mesh.vertices)
    lo, hi = phantom_region()
    assert not ((V >= lo) & (V <= hi)).all(1).any()
    a, b = parts["_mirror_tris"]
    mv = V[np.asarray(mesh.triangles)[a:b]].reshape(-1, 3)
    assert np.allclose(mv[:, 1], 2.0)


def test_synth_sequence_of_the_mirror_scene():
    seq = synthetic_sequence(n_frames=3, width=32, height=24, scene="mirror")
    assert len(seq.frames) == 3 and "mirror" in seq.parts and "sphere" in seq.parts
    assert all((f.depth_m > 0).mean() > 0.9 for f in seq.frames)
