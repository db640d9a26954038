"""What the products need from a map: the :class:`MapView` protocol.

:class:`~neural_mapping.mapper.Mapper` is a MapView; so are the analytic maps of the tests and
benchmarks (an exact SDF behind the same members). The products use nothing else of a map.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from neural_mapping.config import MapperConfig
    from neural_mapping.coverage import Coverage


class FieldQuery(Protocol):
    """A map's answer for N points (see :meth:`MapView.query`)."""

    sdf: np.ndarray  # (N,) float32: signed distance (m) for sdf maps, density for nerf maps
    occupancy: np.ndarray  # (N,) float32 in [0, 1]; 0.5 where not observed
    gradient: np.ndarray | None  # (N, 3) float32 d value / d point, when asked for
    color: np.ndarray | None  # (N, 3) float32 in [0, 1], when asked for


class MapCounters(Protocol):
    """A map's counters; ``steps`` (training steps taken) tells that the field changed."""

    steps: int


@runtime_checkable
class MapView(Protocol):
    """A map as the products see it.

    ``cfg`` gives ``field.kind`` ("sdf" or "nerf"), ``mesh`` and ``occupancy`` settings;
    ``coverage`` what frames observed (unknown stays unknown); ``lock`` is held while a product
    reads the map, so all its answers come from one state of the weights; ``field`` identifies
    the field (another object is another field) and ``stats.steps`` its training, so together
    they say whether the field changed since a product last looked.
    """

    cfg: MapperConfig
    coverage: Coverage
    lock: AbstractContextManager[Any]
    stats: MapCounters
    field: Any

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo (3,), hi (3,)) metres of the region the map covers; None while it is empty."""

    def query(self, pts_W: np.ndarray, want_gradient: bool = False, want_color: bool = False,
              chunk: int = 65536) -> FieldQuery:
        """Field values at points (N, 3) of the map frame."""

    def occupancy_from_value(self, vals: np.ndarray) -> np.ndarray:
        """Occupancy probability (N,) float32 from raw field values (a query's ``sdf``)."""

    def snapshot(self, into: Any = None) -> MapView:
        """A copy of the map that products can read while the map changes (an earlier copy
        ``into`` may be refreshed and returned); a map that never changes may return itself."""
