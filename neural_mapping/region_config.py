"""The ``map.*`` settings: the region of interest and the pose-plausibility limits
(:mod:`neural_mapping.region` applies them). Imported by :mod:`neural_mapping.config`, whose
``MapperConfig.map`` it is; import it from there."""

from __future__ import annotations

from dataclasses import dataclass

from neural_mapping.config import ConfigGroup, param


@dataclass
class MapRegionConfig(ConfigGroup):
    _prefix = "map."

    max_extent_m: float = param(50.0, "Region of interest: half-width (m, per axis) of the cube around the first accepted camera position; frames whose camera lies outside are rejected, depth points beyond it ignored", lo=1.0, hi=100000.0)
    max_pose_jump_m: float = param(5.0, "Reject a frame whose camera moved more than this (m) from the previous accepted frame less than map.max_pose_gap_s earlier (frames without stamps count as consecutive)", lo=0.01)
    max_rotation_jump_deg: float = param(180.0, "Reject a frame whose camera turned more than this (deg) from the previous accepted frame (as for map.max_pose_jump_m); 180: off (the default: a turn alone cannot grow the map)", lo=1.0, hi=180.0)
    max_pose_gap_s: float = param(1.0, "Pose-jump checks apply between frames whose stamps are closer than this (s)", lo=0.0)
