"""iSDF-style free-space bound: the nearest of the ray's surface point and the batch's surface points."""

import torch

from neural_mapping.objectives.sdf import batch_distance_bound


def test_bound_is_the_nearest_surface_point_and_never_below_the_true_distance():
    # a wall at x = 0 seen at a few points; free points at x = 1; the ray's own surface point is far
    surf = torch.tensor([[0.0, y, z] for y in (-1.0, 0.0, 1.0) for z in (-1.0, 0.0, 1.0)])
    pts = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.5], [0.2, 0.0, 0.0]])
    along = torch.tensor([3.0, 3.0, 0.3])
    b = batch_distance_bound(pts, surf, along)
    assert torch.allclose(b, torch.tensor([1.0, (1 + 0.25 + 0.25) ** 0.5, 0.2]), atol=1e-6)
    assert (b >= pts[:, 0] - 1e-6).all()  # the true distance to the wall is x: an upper bound
    assert torch.equal(batch_distance_bound(pts, surf[:0], along), along)
