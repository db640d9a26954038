"""``SubmapMap``: the map as submaps on a grid, with the members of a ``Mapper`` that the runner,
``OnlineMapper`` and the products use (docs/submaps.md).

Frames are routed to the submaps whose grown box holds enough of their depth points; those are
the *active* submaps (at most ``submaps.max_active``; one unseen for :data:`HOLD_FRAMES` frames, or
the least recently seen when a new one needs its place, is frozen into the
:class:`~neural_mapping.submaps.cache.SubmapCache`). A training step trains one active submap,
round robin. The world coverage is the union of the submaps' coverages: the frozen ones merged
when they freeze (or arrive: :meth:`SubmapMap.merge`, a load), the active ones added when it is
read after a change, so a saved and loaded map observes exactly the same space. Queries blend submaps
(:mod:`.blend`); renders z-buffer the submaps' renders, each within its grown box.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from types import SimpleNamespace

import numpy as np
import torch

from neural_mapping.camera import backproject_depth, image_rays_W
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.coverage import BLOCK, Coverage
from neural_mapping.frame import Frame, FrameError
from neural_mapping.losses import LossTerms
from neural_mapping.mapper import MIN_VALID_PIXELS, Mapper, MapperStats, QueryResult, RenderResult, StepStats, resolve_device
from neural_mapping.region import RegionGuard
from neural_mapping.submaps.blend import blend_query
from neural_mapping.submaps.cache import SubmapCache, mapper_from_state
from neural_mapping.submaps.coverage_union import merge_into
from neural_mapping.submaps.grid import SubmapGrid
from neural_mapping.submaps.submap import Submap, mapper_nbytes

#: depth points (every 4th pixel) a frame must put in a submap's grown box to be given to it
MIN_POINTS = 32
#: an active submap no frame was routed to for this many frames is frozen
HOLD_FRAMES = 15


class _Count:
    """``len()`` of the active submaps' keyframes (``runner`` reads ``len(mapper.keyframes)``)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def submap_config(cfg: MapperConfig) -> MapperConfig:
    """The config of each submap's Mapper: the map's, with the submap table size and no pose-jump
    check of its own (the collection checks poses; a submap sees frames with gaps when revisited)."""
    return apply_overrides(cfg, {"encoding.hash_log2_table": min(cfg.encoding.hash_log2_table,
                                                                  cfg.submaps.hash_log2_table),
                                 "map.max_pose_jump_m": 1e9, "submaps.enabled": False})


class SubmapMap:
    """The submapped map (see module doc). Thread safety as ``Mapper``: members hold ``self.lock``."""

    def __init__(self, cfg: MapperConfig | None = None, directory=None, device=None) -> None:
        self.cfg = cfg or MapperConfig()
        self.device = torch.device(device) if device is not None else resolve_device(self.cfg.device)
        self.lock = threading.RLock()
        self.sub_cfg = submap_config(self.cfg)
        s = self.cfg.submaps
        self.grid = SubmapGrid(s.size_m, s.overlap_m, BLOCK * self.cfg.occupancy.resolution_m)
        self.robot_id = s.robot_id
        self.cache = SubmapCache(directory, s.max_resident_mb * 1e6, self.device)
        self._build()

    def _build(self) -> None:
        self.field = object()  # identifies this map's field for the products' caches (with stats.steps)
        self._submaps: dict[tuple[str, tuple[int, int]], Submap] = {}  # (robot_id, key) -> Submap
        self._active: dict[tuple[int, int], Submap] = {}  # this robot's trained submaps
        self._last_seen: dict[tuple[int, int], int] = {}
        self._turn = 0
        self._frozen_cov = Coverage(voxel_m=self.cfg.occupancy.resolution_m)  # union of the frozen submaps'
        self._cov: Coverage | None = None  # the union with the active ones, rebuilt after a change
        self._cov_n = 0  # update count handed out last (kept increasing across rebuilds: mesh caches)
        self.region = RegionGuard(self.cfg.map)
        self.stats = MapperStats()
        self.last_terms = LossTerms()
        self._objective = SimpleNamespace(cfg=self.cfg)

    def reset(self) -> None:
        with self.lock:
            self._build()

    @property
    def kind(self) -> str:
        return self.cfg.field.kind

    @property
    def keyframes(self) -> _Count:
        return _Count(sum(len(s.mapper.keyframes) for s in self._active.values()))

    def submaps(self) -> list[Submap]:
        """All submaps (active, frozen and spilled), in id order."""
        with self.lock:
            return sorted(self._submaps.values(), key=lambda s: (s.robot_id, s.id))

    def active_ids(self) -> list[str]:
        return sorted(s.id for s in self._active.values())

    def resident_bytes(self) -> int:
        """Bytes of the active submaps (with keyframes, optimiser) and the resident frozen ones."""
        return self._pinned() + self.cache.resident_bytes()

    def _pinned(self) -> int:
        return sum(mapper_nbytes(s.mapper) for s in self._active.values())

    # ------------------------------------------------------------------ input

    def _reject(self, reason: str) -> bool:
        self.stats.frames_rejected += 1
        self.stats.reject_reasons[reason] = self.stats.reject_reasons.get(reason, 0) + 1
        return False

    def add_frame(self, frame: Frame) -> bool:
        """Route a frame to the submaps it sees (see module doc). False when it is unusable."""
        if not isinstance(frame, Frame):
            return self._reject(f"not a Frame: {type(frame).__name__}")
        try:
            frame.validate()
        except FrameError as e:
            return self._reject(f"invalid frame: {e}")
        frame, why = self.region.admit(frame, self.bounds())
        if why:
            return self._reject(why)
        r = self.cfg.render
        ok = (frame.depth_m > r.min_depth_m) & (frame.depth_m < r.max_depth_m)
        if int(ok.sum()) < MIN_VALID_PIXELS:
            return self._reject(f"only {int(ok.sum())} depth pixels in [{r.min_depth_m}, {r.max_depth_m}] m")
        frame = dataclasses.replace(frame, depth_m=np.where(ok, frame.depth_m, 0).astype(np.float32))
        pts = backproject_depth(frame.depth_m, frame.K, frame.T_WC, stride=4)
        near = self.grid.keys_near(pts, MIN_POINTS)[:self.cfg.submaps.max_active]
        if not near:
            return self._reject("no submap holds enough of the frame's depth points")
        with self.lock:
            n = self.stats.frames_added
            for k, _ in near:
                self._last_seen[k] = n
            self._activate([k for k, _ in near], n)
            new_kf = False
            for k, _ in near:
                sub = self._active[k]
                f = sub.frame_for(frame)
                if f is None:
                    continue
                kf0 = sub.mapper.stats.keyframes
                if sub.mapper.add_frame(f):
                    new_kf |= sub.mapper.stats.keyframes != kf0 or sub.mapper.stats.frames_added == 1
                    sub.refresh_bounds()
            if new_kf or n == 0:
                self._cov = None
            self.stats.frames_added += 1
            self.stats.keyframes = len(self.keyframes)
            self.region.accept(frame)
        return True

    def _activate(self, keys: list, n: int) -> None:
        """Make ``keys`` active: freeze those unseen for HOLD_FRAMES frames, then the least recently
        seen while more than max_active would be; thaw or create the new ones."""
        for k in [k for k in self._active if n - self._last_seen.get(k, n) > HOLD_FRAMES]:
            self._freeze(k)
        want = [k for k in keys if k not in self._active]
        while want and len(self._active) + len(want) > self.cfg.submaps.max_active:
            old = min((k for k in self._active if k not in keys), key=lambda k: self._last_seen.get(k, -1))
            self._freeze(old)
        for k in want:
            prev = self._submaps.get((self.robot_id, k))
            mapper = Mapper(self.sub_cfg, device=self.device)
            version = 0
            if prev is not None:  # thaw: a new mapper from the frozen state (the frozen one stays as it is)
                src = self.cache.mapper_of(prev, self._pinned())
                mapper.load_state_dict(src.state_dict(include_coverage=False), coverage=copy.deepcopy(src.coverage))
                self.cache.discard(prev)
                version = prev.version
            sub = Submap(k, self.grid, mapper, robot_id=self.robot_id, version=version)
            self._submaps[(self.robot_id, k)] = sub
            self._active[k] = sub
        self.cache.enforce(self._pinned())

    def _freeze(self, key) -> None:
        sub = self._active.pop(key)
        merge_into(self._frozen_cov, sub.mapper.coverage, sub.origin_W)
        self.cache.freeze(sub, self._pinned())

    @property
    def coverage(self) -> Coverage:
        """Observed space in the map frame: the union of the submaps' coverages (see module doc)."""
        with self.lock:
            if self._cov is None:
                cov = copy.deepcopy(self._frozen_cov)
                cov.n_updates = max(cov.n_updates, self._cov_n)
                for sub in self._active.values():
                    merge_into(cov, sub.mapper.coverage, sub.origin_W)
                self._cov_n = cov.n_updates
                self._cov = cov
            return self._cov

    def freeze_all(self) -> None:
        """Freeze every active submap (before a save, or when mapping ends)."""
        with self.lock:
            for k in list(self._active):
                self._freeze(k)

    # ------------------------------------------------------------------ training

    def step(self, n: int = 1) -> StepStats:
        """n steps, each training one active submap (round robin); stats of the last, summed counts."""
        t0 = time.perf_counter()
        rays = samples = 0
        last = None
        with self.lock:
            ready = [s for s in self._active.values() if s.mapper.keyframes.latest is not None]
            if not ready:
                return StepStats(float("nan"), LossTerms(), 0, 0, 0.0)
            for _ in range(n):
                sub = ready[self._turn % len(ready)]
                self._turn += 1
                last = sub.mapper.step(1)
                rays += last.rays
                samples += last.samples
                self.stats.steps += 1
                sub.refresh_bounds()
            dt = time.perf_counter() - t0
            self.stats.rays_trained += rays
            self.stats.samples_trained += samples
            self.stats.train_seconds += dt
            self.stats.last_loss = last.loss
            self.last_terms = last.terms
        return StepStats(last.loss, last.terms, rays, samples, dt)

    def train_for(self, seconds: float) -> int:
        t_end = time.perf_counter() + seconds
        n = 0
        while self.step(1).rays:
            n += 1
            if time.perf_counter() >= t_end:
                break
        return n

    # ------------------------------------------------------------------ queries

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Union of the submaps' boxes (their bounds cut to their grown boxes), map frame."""
        boxes = [b for b in (s.box_W() for s in list(self._submaps.values())) if b is not None]
        if not boxes:
            return None
        return np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)

    def _entries(self, pts_W: np.ndarray):
        """(submap, mapper) of the submaps whose grown box holds some of the points (spilled ones loaded)."""
        if len(pts_W) == 0:
            return
        lo, hi = pts_W[:, :2].min(0), pts_W[:, :2].max(0)
        for sub in list(self._submaps.values()):
            glo, ghi = self.grid.grown_box(sub.key)
            if np.any(ghi < lo) or np.any(glo > hi) or sub.bounds_W is None:
                continue
            m = sub.mapper if sub.key in self._active and sub.robot_id == self.robot_id else \
                self.cache.mapper_of(sub, self._pinned())
            yield sub, m

    def query(self, pts_W: np.ndarray, want_gradient: bool = False, want_color: bool = False,
              chunk: int = 65536) -> QueryResult:
        """Blended field values at points (N, 3) of the map frame (as ``Mapper.query``)."""
        pts = np.asarray(pts_W, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"query: pts_W must be (N, 3), got {pts.shape}")
        with self.lock:
            p64 = pts.astype(np.float64)
            sdf, grad, col, _ = blend_query(self._entries(p64), self.grid, p64, want_gradient, want_color,
                                            self.cfg.train.truncation_m, chunk)
            observed = self.coverage.observed(p64) if len(pts) else np.zeros(0, bool)
        occ = np.where(observed, self.occupancy_from_value(sdf), 0.5).astype(np.float32)
        return QueryResult(sdf, grad, occ, col)

    def occupancy_from_value(self, vals: np.ndarray) -> np.ndarray:
        from neural_mapping.objectives import OBJECTIVES

        return OBJECTIVES[self.kind].occupancy_from_value(self._objective, vals)

    def render(self, T_WC: np.ndarray, K: np.ndarray, H: int, W: int, chunk: int = 8192) -> RenderResult:
        """Each submap within reach renders inside its box; every pixel takes the nearest surface."""
        color = np.zeros((H, W, 3), np.float32)
        depth = np.zeros((H, W), np.float32)
        opac = np.zeros((H, W), np.float32)
        T_WC = np.asarray(T_WC, np.float64)
        cam = T_WC[:3, 3]
        with self.lock:
            for sub in list(self._submaps.values()):
                box = sub.box_W()
                if box is None or np.linalg.norm(np.clip(cam, box[0], box[1]) - cam) > self.cfg.render.far_m:
                    continue
                m = sub.mapper if sub.key in self._active and sub.robot_id == self.robot_id else \
                    self.cache.mapper_of(sub, self._pinned())
                T_SC = sub.T_SW() @ T_WC
                with m.lock:
                    m.field.eval()
                    o, d = image_rays_W(T_SC, np.asarray(K, np.float64), H, W, device=m.device)
                    lo, hi = (torch.as_tensor(x - sub.origin_W, dtype=torch.float32, device=m.device) for x in box)
                    c, z, a = m.objective.render_image(o, d, lo, hi, chunk)
                c, z, a = np.asarray(c).reshape(H, W, 3), np.asarray(z).reshape(H, W), np.asarray(a).reshape(H, W)
                take = (a > 0.5) & (z > 0) & ((depth == 0) | (z < depth))
                color[take], depth[take], opac[take] = c[take], z[take], a[take]
                fill = (opac == 0) & (a > opac)  # faint renders where nothing solid was seen
                opac[fill] = a[fill]
        return RenderResult(color, depth, opac)

    # ------------------------------------------------------------------ copies and exchange

    def snapshot(self, into: "SubmapMap | None" = None) -> "SubmapMap":
        """A copy for products: active submaps copied (``Mapper.snapshot``), frozen ones shared
        (never changed), the coverage deep-copied; ``into`` (an earlier copy) is refreshed in place."""
        with self.lock:
            snap = into if isinstance(into, SubmapMap) and into.cache is self.cache else object.__new__(SubmapMap)
            old = getattr(snap, "_submaps", {}) if snap is into else {}
            subs = {}
            for rk, s in self._submaps.items():
                if s.key in self._active and s.robot_id == self.robot_id:
                    prev = old.get(rk)
                    c = Submap(s.key, self.grid, s.mapper.snapshot(into=prev.mapper if prev is not None and
                                                                     not prev.frozen else None),
                               robot_id=s.robot_id, version=s.version)
                    subs[rk] = c
                else:
                    subs[rk] = s
            field = snap.field if snap is into else object()
            snap.__dict__.update(cfg=self.cfg, device=self.device, lock=threading.RLock(), sub_cfg=self.sub_cfg,
                                 grid=self.grid, robot_id=self.robot_id, cache=self.cache, field=field,
                                 _submaps=subs, _active={}, _last_seen={}, _turn=0,
                                 _frozen_cov=self.coverage, _cov=None, _cov_n=self._cov_n, region=self.region,
                                 stats=copy.deepcopy(self.stats), last_terms=self.last_terms,
                                 _objective=self._objective)
            return snap

    def merge(self, data: bytes) -> bool:
        """Take an encoded submap (:func:`~neural_mapping.submaps.codec.encode_submap`) from another
        robot or a worker: kept when newer than the one of the same (robot id, cell); False if not."""
        from neural_mapping.submaps.codec import SubmapCodecError, decode_submap

        rec, state = decode_submap(data)
        if not self.grid.same_as(rec.grid):
            raise SubmapCodecError(f"submap {rec.id} belongs to another grid ({rec.grid}, this map's {self.grid.as_dict()})")
        if rec.kind != self.kind:
            raise SubmapCodecError(f"submap {rec.id} is a {rec.kind} field, this map's are {self.kind}")
        with self.lock:
            rk = (rec.robot_id, rec.key)
            cur = self._submaps.get(rk)
            if cur is not None and cur.version >= rec.version:
                return False
            if rec.key in self._active and rec.robot_id == self.robot_id:
                return False  # this robot trains it now
            m = mapper_from_state(state, self.device)
            sub = Submap(rec.key, self.grid, m, robot_id=rec.robot_id, version=rec.version, frozen=True)
            self._submaps[rk] = sub
            merge_into(self._frozen_cov, m.coverage, sub.origin_W)
            self._cov = None
            self.cache.add(sub, self._pinned())
            self.stats.steps += 1  # the field changed: products recompute
            return True
