"""Submaps: the map split on an x-y grid into small fields, trained near the camera, frozen and
spilled to disk elsewhere (docs/submaps.md).

Modules: :mod:`.grid` (cells, grown boxes, blending weights), :mod:`.submap` (one submap in its
local frame), :mod:`.codec` (a submap as bytes: the fleet's and Ray's currency), :mod:`.cache`
(resident budget, spills), :mod:`.coverage_union`, :mod:`.blend` (queries across submaps),
:mod:`.collection` (``SubmapMap``, a MapView), :mod:`.mapdir` (the map directory).
"""

from neural_mapping.submaps.codec import SubmapCodecError, SubmapRecord, decode_submap, encode_submap
from neural_mapping.submaps.collection import SubmapMap
from neural_mapping.submaps.grid import SubmapGrid, submap_id
from neural_mapping.submaps.mapdir import is_map_dir, load_any, load_map_dir, save_map_dir
from neural_mapping.submaps.submap import Submap

__all__ = ["SubmapMap", "SubmapGrid", "Submap", "submap_id", "SubmapRecord", "SubmapCodecError", "encode_submap",
           "decode_submap", "save_map_dir", "load_map_dir", "load_any", "is_map_dir"]
