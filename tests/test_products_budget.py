"""products.budget: memory estimates of the products and the refusal over a budget (the function
the command line and the node's services call before computing a product)."""

import numpy as np
import pytest

from analytic_scenes import AnalyticMap, observed_room
from neural_mapping.products import ProductTooLarge, check_product_memory, estimate_product_bytes


@pytest.fixture(scope="module")
def room():
    return observed_room()


def test_estimates_grow_with_the_resolution_and_refuse_over_the_budget(room):
    lo, hi = room.bounds()
    cells = np.prod(np.ceil((hi - lo) / 0.01))
    occ3 = estimate_product_bytes(room, "occupancy_3d", 0.01)
    assert cells * 200 < occ3 < cells * 1000  # a few hundred bytes per cell
    for kind in ("mesh", "occupancy_2d", "occupancy_3d", "esdf"):
        coarse, fine = estimate_product_bytes(room, kind, 0.05), estimate_product_bytes(room, kind, 0.005)
        assert 0 < coarse < fine, kind
    # the mesh at the default voxel fits, at 0.1 mm it cannot
    assert check_product_memory(room, "mesh", 0.02) < 2 * 1024 ** 3
    with pytest.raises(ProductTooLarge, match=r"mesh at 0.0001 m over the observed region .* needs about .* GB"):
        check_product_memory(room, "mesh", 0.0001)
    with pytest.raises(ProductTooLarge, match="over the budget of 1 MB"):
        check_product_memory(room, "occupancy_2d", 0.05, budget_bytes=1024 ** 2, z_min=0.1, z_max=1.5)
    # a taller height band costs more for the 2D slice (one state per height and cell)
    assert estimate_product_bytes(room, "occupancy_2d", 0.01, z_min=0.0, z_max=2.0) > \
        estimate_product_bytes(room, "occupancy_2d", 0.01, z_min=0.0, z_max=0.1)
    assert issubclass(ProductTooLarge, ValueError)  # what the services already answer success: false for


def test_an_empty_map_costs_nothing_and_bad_arguments_are_refused():
    empty = AnalyticMap()
    assert estimate_product_bytes(empty, "mesh", 1e-6) == 0
    with pytest.raises(ValueError, match="product must be one of"):
        estimate_product_bytes(empty, "pointcloud", 0.05)
    with pytest.raises(ValueError, match="resolution must be positive"):
        estimate_product_bytes(empty, "mesh", float("nan"))
