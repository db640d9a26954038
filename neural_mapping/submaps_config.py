"""The ``submaps.*`` settings (:mod:`neural_mapping.submaps` applies them; docs/submaps.md).
Imported by :mod:`neural_mapping.config`, whose ``MapperConfig.submaps`` it is; import it from there."""

from __future__ import annotations

from dataclasses import dataclass

from neural_mapping.config import ConfigError, ConfigGroup, param


@dataclass
class SubmapsConfig(ConfigGroup):
    _prefix = "submaps."

    enabled: bool = param(False, "Split the map into submaps on an x-y grid (docs/submaps.md): only those near the camera "
                                 "are trained and resident, the others frozen and spilled to disk beyond "
                                 "submaps.max_resident_mb")
    size_m: float = param(8.0, "Submap cell edge in x and y (m); z is not split", lo=1.0, hi=1000.0)
    overlap_m: float = param(1.0, "Each submap trains this far beyond its cell (m); neighbours blend over twice this "
                                  "(at most size_m / 2)", lo=0.0, hi=500.0)
    max_active: int = param(2, "Submaps trained at once (those the current frame sees most); the others are frozen",
                            lo=1, hi=64)
    max_resident_mb: float = param(512.0, "Resident budget (MB) of the submaps' tensors and coverage; frozen submaps "
                                          "beyond it are spilled to the map directory (active ones never)",
                                   lo=1.0, hi=1e6)
    hash_log2_table: int = param(15, "log2 of each submap field's hash table size per level (at most "
                                     "encoding.hash_log2_table)", lo=8, hi=24)
    robot_id: str = param("", "Robot id written into every submap (a fleet's map server tells robots apart by it)")

    def check(self) -> None:
        if 2.0 * self.overlap_m > self.size_m:
            raise ConfigError(f"submaps.overlap_m ({self.overlap_m}) must be at most submaps.size_m / 2 ({self.size_m / 2})")
