"""Keyframe selection, a bounded replay buffer on the device, and ray sampling.

Each stored frame keeps only its valid-depth pixels (every ``downsample``-th pixel), as flat
device tensors: camera ray directions ``dirs_C (P, 3)`` (z = 1), depth ``(P,)``, colour
``(P, 3)`` uint8 and ``edge_m (P,)``, the lateral distance (m, at the pixel's depth) to the nearest
silhouette pixel (a pixel in front of a depth jump, see :func:`silhouette_distance_m`). Rays are drawn from the latest frame (a fixed fraction) and from the
keyframes in proportion to their recent loss (iSDF-style active sampling).

Every frame contributes, keyframe or not: a frame that is not a keyframe is kept only as the latest
(at most :data:`LATEST_MAX_PIXELS` random pixels: cheap to integrate) and gives
:data:`RESERVOIR_RAYS_PER_FRAME` random rays (world frame) to a bounded :class:`RayReservoir`
(:data:`RESERVOIR_CAPACITY` rays; a full reservoir overwrites random slots, so old rays fade out
gradually); :data:`RESERVOIR_FRACTION` of the keyframe share of each batch is drawn from it. A noisy
sensor's depth averages out over every frame that reached the map, not only over the keyframes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from neural_mapping.camera import pixel_dirs_C
from neural_mapping.config import KeyframeConfig
from neural_mapping.frame import Frame


#: a frame that is not a keyframe keeps at most this many random valid pixels as the latest frame
LATEST_MAX_PIXELS = 4096
#: rays each non-keyframe adds to the reservoir, the reservoir's bound, its share of the keyframe rays
RESERVOIR_RAYS_PER_FRAME = 512
RESERVOIR_CAPACITY = 65536
RESERVOIR_FRACTION = 0.3


@dataclass
class StoredFrame:
    dirs_C: torch.Tensor  # (P, 3) float32 camera-frame directions with z = 1
    depth: torch.Tensor  # (P,) float32 z-depth in m
    rgb: torch.Tensor  # (P, 3) uint8
    T_WC: torch.Tensor  # (4, 4) float32
    T_WC_np: np.ndarray  # (4, 4) float64
    stamp_ns: int
    edge_m: torch.Tensor  # (P,) float16 lateral distance to the nearest silhouette (m; inf: none)
    loss: float = 1.0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.dirs_C, self.depth, self.rgb, self.T_WC, self.edge_m))

    def state_dict(self) -> dict:
        return {"dirs_C": self.dirs_C.cpu(), "depth": self.depth.cpu(), "rgb": self.rgb.cpu(),
                "T_WC": self.T_WC_np.copy(), "stamp_ns": self.stamp_ns, "loss": self.loss,
                "edge_m": self.edge_m.cpu()}

    @classmethod
    def from_state_dict(cls, d: dict, device) -> "StoredFrame":
        T = np.asarray(d["T_WC"], dtype=np.float64)
        edge = d.get("edge_m")  # maps written before edge distances: no silhouette known
        if edge is None:
            edge = torch.full(d["depth"].shape, float("inf"), dtype=torch.float16)
        return cls(d["dirs_C"].to(device), d["depth"].to(device), d["rgb"].to(device),
                   torch.as_tensor(T, dtype=torch.float32, device=device), T, int(d["stamp_ns"]),
                   edge.to(device), float(d["loss"]))


@dataclass
class RayBatch:
    """Training rays in the world frame."""

    origins_W: torch.Tensor  # (R, 3)
    dirs_W: torch.Tensor  # (R, 3) z-scaled (t along the ray = camera z-depth)
    depth: torch.Tensor  # (R,) measured z-depth, m
    rgb: torch.Tensor  # (R, 3) float in [0, 1]
    source: torch.Tensor  # (R,) long: keyframe index, or -1 for the latest frame
    edge_m: torch.Tensor | None = None  # (R,) float lateral distance to the nearest silhouette (m)

    def __len__(self) -> int:
        return int(self.depth.shape[0])


def silhouette_distance_m(depth: np.ndarray, valid: np.ndarray, f_px: float, jump_m: float) -> np.ndarray:
    """Per pixel, the lateral distance (m) to the nearest silhouette pixel of a depth image.

    A silhouette pixel is a valid pixel with a 4-neighbour that is farther by more than ``jump_m``
    or has no valid depth (the edge of a foreground object, seen against what lies behind it).
    Distances are chessboard pixel distances + 0.5, times depth / ``f_px`` (the pixel's footprint
    at its depth); ``inf`` everywhere when ``jump_m <= 0`` or there is no silhouette.
    depth, valid (H, W) -> (H, W) float32.
    """
    from scipy.ndimage import distance_transform_cdt

    if jump_m <= 0:
        return np.full(depth.shape, np.inf, np.float32)
    far = np.where(valid, depth, np.inf).astype(np.float32)  # invalid neighbours count as "far away"
    pad = np.pad(far, 1, mode="edge")  # the image border is no silhouette
    H, W = depth.shape
    nbr = np.maximum.reduce([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])[:H, :W]
    sil = valid & (nbr > far + jump_m)
    if not sil.any():
        return np.full(depth.shape, np.inf, np.float32)
    dist_px = distance_transform_cdt(~sil, metric="chessboard").astype(np.float32) + 0.5
    return dist_px * np.where(valid, depth, 0).astype(np.float32) / np.float32(f_px)


def store_frame(frame: Frame, downsample: int, min_depth: float, max_depth: float, device,
                edge_jump_m: float = 0.0, max_pixels: int | None = None,
                rng: np.random.Generator | None = None) -> StoredFrame | None:
    """Valid pixels of a frame as device tensors, or None when no pixel has usable depth.

    ``edge_jump_m`` > 0 records each pixel's distance to the nearest silhouette (``edge_m``);
    ``max_pixels`` keeps at most that many of the valid pixels, drawn with ``rng``."""
    d = frame.depth_m[::downsample, ::downsample]
    valid = (d > min_depth) & (d < max_depth)
    v, u = np.nonzero(valid)
    if len(v) == 0:
        return None
    if max_pixels is not None and len(v) > max_pixels:
        keep = np.sort((rng or np.random.default_rng(frame.stamp_ns & 0xFFFFFFFF)).choice(len(v), max_pixels,
                                                                                          replace=False))
        v, u = v[keep], u[keep]
    f_px = float(np.sqrt(frame.K[0, 0] * frame.K[1, 1])) / downsample
    edge = silhouette_distance_m(d, valid, f_px, edge_jump_m)[v, u]
    Kt = torch.as_tensor(frame.K, dtype=torch.float32)
    dirs = pixel_dirs_C(Kt, torch.as_tensor(u * downsample, dtype=torch.float32),
                        torch.as_tensor(v * downsample, dtype=torch.float32))
    rgb = frame.rgb[::downsample, ::downsample][v, u]
    T = frame.T_WC
    return StoredFrame(dirs.to(device), torch.as_tensor(d[v, u], device=device),
                       torch.as_tensor(rgb, device=device), torch.as_tensor(T, dtype=torch.float32, device=device),
                       T.copy(), frame.stamp_ns, torch.as_tensor(edge.astype(np.float16), device=device))


def pose_distance(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(translation in m, rotation angle in degrees) between two poses."""
    dt = float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]))
    R = T_a[:3, :3].T @ T_b[:3, :3]
    ang = math.degrees(math.acos(float(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))
    return dt, ang


class RayReservoir:
    """A bounded store of training rays in the world frame, fed a few random rays by every frame."""

    def __init__(self, capacity: int, device):
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.n = 0  # rays held
        self.seen = 0  # rays ever added
        c, dev = self.capacity, self.device
        self.origins = torch.zeros(c, 3, device=dev)
        self.dirs = torch.zeros(c, 3, device=dev)
        self.depth = torch.zeros(c, device=dev)
        self.rgb = torch.zeros(c, 3, dtype=torch.uint8, device=dev)
        self.edge = torch.zeros(c, dtype=torch.float16, device=dev)

    def __len__(self) -> int:
        return self.n

    def add(self, sf: StoredFrame, n_rays: int, generator: torch.Generator | None = None) -> None:
        """Up to ``n_rays`` random pixels of a stored frame: appended, or over random slots when full."""
        P = sf.depth.shape[0]
        k = min(int(n_rays), P)
        if k <= 0:
            return
        i = torch.randperm(P, device=self.device, generator=generator)[:k]
        o, dW = _to_world(sf.T_WC, sf.dirs_C[i])
        free = min(k, self.capacity - self.n)
        slots = torch.arange(self.n, self.n + free, device=self.device)
        if free < k:
            slots = torch.cat([slots, torch.randint(0, self.capacity, (k - free,), device=self.device,
                                                    generator=generator)])
        self.origins[slots], self.dirs[slots], self.depth[slots] = o, dW, sf.depth[i]
        self.rgb[slots], self.edge[slots] = sf.rgb[i], sf.edge_m[i]
        self.n += free
        self.seen += k

    def sample(self, n: int, generator: torch.Generator | None = None):
        """(origins, dirs, depth, rgb, source = -2, edge) of n rays drawn with replacement."""
        j = torch.randint(0, self.n, (n,), device=self.device, generator=generator)
        return (self.origins[j], self.dirs[j], self.depth[j], self.rgb[j],
                torch.full((n,), -2, device=self.device, dtype=torch.long), self.edge[j])

    def state_dict(self) -> dict:
        n = self.n
        return {"origins": self.origins[:n].cpu(), "dirs": self.dirs[:n].cpu(), "depth": self.depth[:n].cpu(),
                "rgb": self.rgb[:n].cpu(), "edge": self.edge[:n].cpu(), "seen": self.seen}

    def load_state_dict(self, d: dict) -> None:
        n = min(int(d["depth"].shape[0]), self.capacity)
        for name in ("origins", "dirs", "depth", "rgb", "edge"):
            getattr(self, name)[:n] = d[name][:n].to(self.device)
        self.n, self.seen = n, int(d.get("seen", n))


class KeyframeBuffer:
    """Bounded keyframe store + latest frame; samples training rays."""

    def __init__(self, cfg: KeyframeConfig, device, min_depth: float, max_depth: float, seed: int = 0,
                 edge_jump_m: float = 0.0):
        self.cfg = cfg
        self.device = torch.device(device)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.edge_jump_m = edge_jump_m
        self._keyframes: list[StoredFrame] = []  # read as .keyframes (which brings their losses to the host)
        self.latest: StoredFrame | None = None
        self.dropped = 0
        self._cat = None  # cached concatenation of keyframe pixels
        # the keyframes' sampling losses on the device while training updates them every step (no host
        # sync); copied back into StoredFrame.loss (one copy) before the list changes or is saved
        self._loss_dev: torch.Tensor | None = None
        self.reservoir = RayReservoir(RESERVOIR_CAPACITY, self.device)
        self._rng = np.random.default_rng(seed)  # pixel subsets of non-keyframes

    def __len__(self) -> int:
        return len(self._keyframes)

    @property
    def keyframes(self) -> list[StoredFrame]:
        """The keyframes, oldest first, their ``loss`` up to date (read back from the device if training
        moved it there)."""
        self._flush_losses()
        return self._keyframes

    @keyframes.setter
    def keyframes(self, value: list[StoredFrame]) -> None:
        self._loss_dev = None
        self._keyframes = value
        self._cat = None

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes for k in self._keyframes)

    def is_keyframe(self, T_WC: np.ndarray) -> bool:
        """True when the pose is far enough (translation or rotation) from the last keyframe."""
        if not self._keyframes:
            return True
        dt, ang = pose_distance(self._keyframes[-1].T_WC_np, T_WC)
        return dt >= self.cfg.min_translation_m or ang >= self.cfg.min_rotation_deg

    def add(self, frame: Frame, generator: torch.Generator | None = None) -> tuple[bool, bool]:
        """Store a frame as the latest (and as a keyframe if selected) -> (usable, became_keyframe).

        A frame that is not a keyframe keeps a random subset of its pixels as the latest and gives
        a few rays to the reservoir (``generator``: the map's, for the rays drawn)."""
        kf = self.is_keyframe(frame.T_WC)
        sf = store_frame(frame, self.cfg.downsample, self.min_depth, self.max_depth, self.device, self.edge_jump_m,
                         max_pixels=None if kf else LATEST_MAX_PIXELS, rng=self._rng)
        if sf is None:
            return False, False
        self.latest = sf
        if not kf:
            self.reservoir.add(sf, RESERVOIR_RAYS_PER_FRAME, generator)
            return True, False
        self._flush_losses()
        sf.loss = max((k.loss for k in self._keyframes), default=1.0)  # new frames get sampled first
        self._keyframes.append(sf)
        self._cat = None
        self._enforce_bounds()
        return True, True

    def _loss_tensor(self) -> torch.Tensor:
        """The keyframes' losses (K,) float32 on the device (made from StoredFrame.loss when needed)."""
        if self._loss_dev is None:
            self._loss_dev = torch.tensor([k.loss for k in self._keyframes], device=self.device, dtype=torch.float32)
        return self._loss_dev

    def _flush_losses(self) -> None:
        """Copy the device-side losses back into the keyframes (before the list changes or is read)."""
        if self._loss_dev is not None:
            for k, v in zip(self._keyframes, self._loss_dev.tolist()):
                k.loss = v
            self._loss_dev = None

    def _enforce_bounds(self) -> None:
        self._flush_losses()
        max_bytes = self.cfg.max_mb * 1e6
        while len(self._keyframes) > 1 and (len(self._keyframes) > self.cfg.max_keyframes or self.nbytes > max_bytes):
            # drop the lowest-loss keyframe among all but the newest; ties -> the oldest
            i = min(range(len(self._keyframes) - 1), key=lambda j: (self._keyframes[j].loss, j))
            del self._keyframes[i]
            self.dropped += 1
            self._cat = None

    def _concat(self):
        if self._cat is None:
            ks = self._keyframes
            counts = torch.tensor([k.depth.shape[0] for k in ks], device=self.device)
            offsets = torch.cumsum(counts, 0) - counts
            self._cat = (torch.cat([k.dirs_C for k in ks]), torch.cat([k.depth for k in ks]),
                         torch.cat([k.rgb for k in ks]), torch.stack([k.T_WC for k in ks]), counts, offsets,
                         torch.cat([k.edge_m for k in ks]))
        return self._cat

    def sample(self, n_rays: int, latest_fraction: float, generator: torch.Generator | None = None) -> RayBatch:
        """n_rays rays: round(n * latest_fraction) from the latest frame, the rest from keyframes
        chosen with probability proportional to their loss."""
        if self.latest is None:
            raise RuntimeError("no frame to sample from")
        dev = self.device
        n_latest = int(round(n_rays * latest_fraction)) if self._keyframes else n_rays
        n_kf = n_rays - n_latest
        n_res = int(round(n_kf * RESERVOIR_FRACTION)) if len(self.reservoir) else 0
        n_kf -= n_res
        parts = []
        if n_latest:
            L = self.latest
            i = torch.randint(0, L.depth.shape[0], (n_latest,), device=dev, generator=generator)
            o, dW = _to_world(L.T_WC, L.dirs_C[i])
            parts.append((o, dW, L.depth[i], L.rgb[i], torch.full((n_latest,), -1, device=dev, dtype=torch.long),
                          L.edge_m[i]))
        if n_kf:
            dirs, depth, rgb, Ts, counts, offsets, edge = self._concat()
            p = self._loss_tensor().clamp_min(1e-8)
            kf = torch.multinomial(p / p.sum(), n_kf, replacement=True, generator=generator)  # (n_kf,)
            u = torch.rand(n_kf, device=dev, generator=generator)
            pix = offsets[kf] + (u * counts[kf]).long().clamp_max(counts[kf] - 1)
            T = Ts[kf]  # (n_kf, 4, 4)
            dW = torch.einsum("nij,nj->ni", T[:, :3, :3], dirs[pix])
            parts.append((T[:, :3, 3], dW, depth[pix], rgb[pix], kf, edge[pix]))
        if n_res:
            parts.append(self.reservoir.sample(n_res, generator))
        o, d, z, c, s, e = (torch.cat(x) for x in zip(*parts))
        return RayBatch(o, d, z, c.float() / 255.0, s, e.float())

    def update_losses(self, source: torch.Tensor, ray_loss: torch.Tensor, momentum: float = 0.5) -> None:
        """Blend each sampled keyframe's loss with the mean loss of its rays this step."""
        if not self._keyframes:
            return
        # on the device, masked (no boolean indexing, no copy to the host): rays of the latest frame or
        # the reservoir (source < 0) add nothing; keyframes without rays this step keep their loss
        K = len(self._keyframes)
        m = source >= 0
        s = torch.where(m, source, torch.zeros_like(source))
        rl = torch.where(m, ray_loss.detach().float(), torch.zeros((), device=ray_loss.device))
        tot = torch.zeros(K, device=self.device).index_add_(0, s, rl)
        cnt = torch.zeros(K, device=self.device).index_add_(0, s, m.float())
        cur = self._loss_tensor()
        self._loss_dev = torch.where(cnt > 0, momentum * cur + (1 - momentum) * (tot / cnt.clamp_min(1)), cur)

    def state_dict(self) -> dict:
        self._flush_losses()
        return {"keyframes": [k.state_dict() for k in self._keyframes],
                "latest": None if self.latest is None else self.latest.state_dict(), "dropped": self.dropped,
                "reservoir": self.reservoir.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self._loss_dev = None
        self._keyframes = [StoredFrame.from_state_dict(k, self.device) for k in d.get("keyframes", [])]
        lt = d.get("latest")
        self.latest = None if lt is None else StoredFrame.from_state_dict(lt, self.device)
        self.dropped = int(d.get("dropped", 0))
        self._cat = None
        self.reservoir = RayReservoir(RESERVOIR_CAPACITY, self.device)
        if d.get("reservoir") is not None:  # maps saved before the reservoir have none
            self.reservoir.load_state_dict(d["reservoir"])


def _to_world(T_WC: torch.Tensor, dirs_C: torch.Tensor):
    dW = dirs_C @ T_WC[:3, :3].T
    return T_WC[:3, 3].expand_as(dW), dW
