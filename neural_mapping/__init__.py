"""neural_mapping: online neural implicit maps (SDF / radiance field) from RGB-D + poses."""

__version__ = "0.1.0"
