"""A live web viewer (viser) of a neural map: mesh, trajectory, frusta, occupancy, SDF slice, and
views rendered through the field from the browser's camera.

Modules, one concept each: :mod:`.config` (the ``viewer.*`` settings, no viser import),
:mod:`.server` (the viser server, the update loop and its lifetime), :mod:`.mesh_chunks`
(the mesh cut into chunks, resent only when they change; :mod:`.glb` encodes them), :mod:`.scene` (trajectory, frusta,
occupancy plane, SDF slice), :mod:`.look` (the browser camera as ``T_WC`` and the renders
through the field), :mod:`.panels` (status, look-through panel, controls), :mod:`.live`
(feeding an input at its pace, opening a map file), :mod:`.bench` (benchmarks/RESULTS.md's figures).
Importing this package imports no viser.
"""

import neural_mapping.config  # noqa: F401 - first: it imports .config below (the viewer.* group of MapperConfig)
from neural_mapping.viewer.config import ViewerConfig  # noqa: E402

__all__ = ["ViewerConfig"]
