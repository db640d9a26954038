"""Objectives of the field kinds, by ``cfg.field.kind`` (see :mod:`.base`).

A new kind is a module with an :class:`Objective` subclass and one line in :data:`OBJECTIVES`
(plus its field in :func:`neural_mapping.fields.build_field` and its name in the config's choices).
"""

from __future__ import annotations

import torch
from torch import nn

from neural_mapping.config import MapperConfig
from neural_mapping.objectives.base import LossResult, Objective, ray_points
from neural_mapping.objectives.nerf import NerfObjective
from neural_mapping.objectives.sdf import SdfObjective

#: objective class of each field kind
OBJECTIVES: dict[str, type[Objective]] = {
    SdfObjective.kind: SdfObjective,
    NerfObjective.kind: NerfObjective,
}


def build_objective(cfg: MapperConfig, field: nn.Module, generator: torch.Generator) -> Objective:
    """The objective of ``cfg.field.kind`` for ``field``, drawing its samples from ``generator``.

    ValueError for a kind without an objective, or a field built for another kind.
    """
    kind = cfg.field.kind
    cls = OBJECTIVES.get(kind)
    if cls is None:
        raise ValueError(f"field.kind: no objective for {kind!r} (known: {', '.join(sorted(OBJECTIVES))})")
    field_kind = getattr(field, "kind", kind)
    if field_kind != kind:
        raise ValueError(f"field.kind is {kind!r} but the field is a {field_kind!r} field")
    return cls(cfg, field, generator)


__all__ = ["OBJECTIVES", "LossResult", "NerfObjective", "Objective", "SdfObjective", "build_objective", "ray_points"]
