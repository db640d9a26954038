"""Depth sensor noise models for synthetic frames: clean, Kinect (v1) and RealSense D435.

- ``kinect``: axial noise after Nguyen, Izadi, Lovell (3DIMPVT 2012), fitted for 10-60 deg
  incidence: sigma_z(z) = 1.2 mm + 1.9 mm * (z - 0.4 m)^2 (1.88 mm at 1 m, 14.0 mm at 3 m);
  lateral noise (a Gaussian shift of the sampled pixel, ``lateral_px``) is optional and off by
  default; 1 % random dropouts and dropouts on pixels next to a depth discontinuity > 5 cm
  (the structured-light pattern is occluded there), each with probability 0.5.
- ``realsense``: the D435's RMS depth error from its datasheet (Intel D400 series, rev. 009,
  "depth RMS error" and Intel's depth tuning white paper): RMS(z) = z^2 * subpixel / (f_px * baseline)
  with baseline = 50 mm, subpixel = 0.1 (the white paper's typical 0.05-0.1, the worse end for
  indoor texture) and f_px = 224 px (the 424x240 depth mode at 87 deg HFOV: 212 / tan(43.5 deg)),
  i.e. 0.89 % of z per metre of z: 3.6 cm = 1.8 % at 2 m (the datasheet: <= 2 % at 2 m). Stereo is noisier at edges: 2 % random dropouts and edge
  dropouts with probability 0.7.

Noise is added to the z-depth; everything is drawn from the caller's numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Kinect axial noise (Nguyen et al. 2012): sigma = A + B * (z - Z0)^2 (m)
KINECT_A_M, KINECT_B_PER_M, KINECT_Z0_M = 0.0012, 0.0019, 0.4
#: RealSense D435 (datasheet): RMS = z^2 * subpixel / (f_px * baseline)
D435_SUBPIXEL, D435_BASELINE_M, D435_F_PX = 0.1, 0.050, 224.0
#: a depth discontinuity larger than this (m) between 4-neighbours is a depth edge
EDGE_JUMP_M = 0.05


@dataclass(frozen=True)
class SensorModel:
    name: str
    random_dropout: float = 0.0  # probability a valid pixel is lost
    edge_dropout: float = 0.0  # probability a pixel at a depth edge is lost
    lateral_px: float = 0.0  # std of the lateral shift of the sampled pixel (px)

    def sigma_m(self, z: np.ndarray) -> np.ndarray:
        """Axial noise std (m) at z-depth z (m)."""
        z = np.asarray(z, dtype=np.float64)
        if self.name == "kinect":
            return KINECT_A_M + KINECT_B_PER_M * (z - KINECT_Z0_M) ** 2
        if self.name == "realsense":
            return z * z * D435_SUBPIXEL / (D435_F_PX * D435_BASELINE_M)
        return np.zeros_like(z)


SENSORS = {
    "clean": SensorModel("clean"),
    "kinect": SensorModel("kinect", random_dropout=0.01, edge_dropout=0.5, lateral_px=0.0),
    "realsense": SensorModel("realsense", random_dropout=0.02, edge_dropout=0.7),
}


def depth_edges(depth: np.ndarray, jump_m: float = EDGE_JUMP_M) -> np.ndarray:
    """(H, W) bool: valid pixels whose 4-neighbourhood holds a jump > jump_m or an invalid pixel."""
    valid = depth > 0
    pad = np.pad(np.where(valid, depth, np.inf), 1, mode="edge")
    H, W = depth.shape
    c = pad[1:-1, 1:-1]
    jump = np.zeros((H, W), bool)
    for n in (pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]):
        with np.errstate(invalid="ignore"):
            jump |= ~(np.abs(n - c) <= jump_m)
    return valid & jump


def apply_sensor(depth: np.ndarray, model: SensorModel | str, rng: np.random.Generator,
                 lateral_px: float | None = None) -> np.ndarray:
    """A noisy copy of a clean z-depth image (m, 0 = no return): lateral shift, axial noise, dropouts."""
    m = SENSORS[model] if isinstance(model, str) else model
    if m.name == "clean":
        return depth.copy()
    d = np.asarray(depth, dtype=np.float64)
    valid = d > 0
    lat = m.lateral_px if lateral_px is None else lateral_px
    if lat > 0:  # each pixel reports the depth of a slightly shifted pixel (nearest)
        H, W = d.shape
        v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        vs = np.clip(np.round(v + rng.normal(0, lat, d.shape)).astype(int), 0, H - 1)
        us = np.clip(np.round(u + rng.normal(0, lat, d.shape)).astype(int), 0, W - 1)
        d = d[vs, us]
        valid = d > 0
    edges = depth_edges(d)
    out = np.where(valid, d + rng.normal(0.0, 1.0, d.shape) * m.sigma_m(d), 0.0)
    drop = rng.random(d.shape) < m.random_dropout
    drop |= edges & (rng.random(d.shape) < m.edge_dropout)
    out[drop | (out <= 0)] = 0.0
    return out.astype(np.float32)


__all__ = ["SensorModel", "SENSORS", "apply_sensor", "depth_edges", "KINECT_A_M", "KINECT_B_PER_M", "KINECT_Z0_M",
           "D435_SUBPIXEL", "D435_BASELINE_M", "D435_F_PX"]
