"""The ``Mapper`` facade: frames in, a trained neural field out.

It composes small parts: a :class:`~neural_mapping.keyframes.KeyframeBuffer` (device-side
pixels and ray sampling), a field (:mod:`neural_mapping.fields`), the objective of its kind
(:mod:`neural_mapping.objectives`: ray samples, loss, rendering, occupancy from values), an
Adam optimiser and a :class:`~neural_mapping.coverage.Coverage` of observed space.
The mapped region grows with the observations; nobody gives a bounding box.

``step``, ``query``, ``render``, ``add_frame`` and ``state_dict`` hold ``self.lock`` (an
RLock), so a ROS node may train in one thread and answer services in another.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from neural_mapping import fastquery
from neural_mapping.camera import backproject_depth, image_rays_W
from neural_mapping.config import MapperConfig, from_dict, to_dict
from neural_mapping.coverage import Coverage
from neural_mapping.fields import build_field
from neural_mapping.frame import Frame, FrameError
from neural_mapping.keyframes import KeyframeBuffer
from neural_mapping.losses import LossTerms
from neural_mapping.objectives import build_objective
from neural_mapping.online import WarnThrottle
from neural_mapping.region import RegionGuard

log = logging.getLogger(__name__)
#: distinct reasons counted apart in ``MapperStats.reject_reasons`` (the rest under "other reasons")
MAX_REJECT_REASONS = 32

STATE_VERSION = 1
#: frames with fewer usable depth pixels than this are rejected
MIN_VALID_PIXELS = 64


class _DeviceScalars:
    """The last step's loss and unweighted terms, still on the device: a training step never waits for
    the GPU (no host sync); the values cross to the host, in one copy, when first read."""

    __slots__ = ("_values", "_floats")

    def __init__(self, total: torch.Tensor, terms: LossTerms):
        vals = [total.detach().float().reshape(())]
        for f in dataclasses.fields(LossTerms):
            v = getattr(terms, f.name)
            vals.append(v.detach().float().reshape(()) if torch.is_tensor(v)
                        else torch.full((), float(v), device=total.device))
        self._values = torch.stack(vals)
        self._floats: list[float] | None = None

    def floats(self) -> list[float]:
        if self._floats is None:
            self._floats = self._values.tolist()
            self._values = None
        return self._floats

    def loss(self) -> float:
        return self.floats()[0]

    def terms(self) -> LossTerms:
        return LossTerms(*self.floats()[1:])


class StepStats:
    """What ``Mapper.step`` did: ``loss`` and ``terms`` of the last step (read from the device when
    first accessed), rays and sample points trained, seconds (host time: the GPU may still run)."""

    def __init__(self, loss, terms: LossTerms | None, rays: int, samples: int, seconds: float):
        self._loss, self._terms = loss, terms  # loss: a float, or the step's _DeviceScalars
        self.rays = rays
        self.samples = samples  # sample points evaluated by the field
        self.seconds = seconds

    @property
    def loss(self) -> float:
        return self._loss.loss() if isinstance(self._loss, _DeviceScalars) else self._loss

    @property
    def terms(self) -> LossTerms:
        return self._loss.terms() if isinstance(self._loss, _DeviceScalars) else self._terms

    def __repr__(self) -> str:
        return (f"StepStats(loss={self.loss!r}, terms={self.terms!r}, rays={self.rays}, samples={self.samples}, "
                f"seconds={self.seconds!r})")


@dataclass
class MapperStats:
    frames_added: int = 0
    frames_rejected: int = 0
    keyframes: int = 0
    steps: int = 0
    last_loss: float = float("nan")
    rays_trained: int = 0
    samples_trained: int = 0
    train_seconds: float = 0.0
    reject_reasons: dict = field(default_factory=dict)


@dataclass
class QueryResult:
    sdf: np.ndarray  # (N,) float32: signed distance (m) for sdf fields, density (1/m) for nerf
    gradient: np.ndarray | None  # (N, 3) float32 d value / d pts_W
    occupancy: np.ndarray  # (N,) float32 in [0, 1]; 0.5 where not observed
    color: np.ndarray | None  # (N, 3) float32 in [0, 1]


@dataclass
class RenderResult:
    color: np.ndarray  # (H, W, 3) float32 [0, 1]
    depth: np.ndarray  # (H, W) float32 z-depth in m, 0 = no hit
    opacity: np.ndarray  # (H, W) float32 [0, 1]


def _cuda_indices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG ``fork_rng`` must save for work on ``device``."""
    return [device.index or 0] if device.type == "cuda" else []


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch.cuda.is_available() is False")
    return torch.device(name)


class Mapper:
    """Online neural implicit mapper (see module doc). Contract in the project brief."""

    def __init__(self, cfg: MapperConfig | None = None, device: str | torch.device | None = None):
        self.cfg = cfg or MapperConfig()
        self.device = torch.device(device) if device is not None else resolve_device(self.cfg.device)
        self.lock = threading.RLock()
        self.reject_warn = WarnThrottle(log.warning)  # rejected frames: counted each, logged once per 5 s
        self._build()

    # ------------------------------------------------------------------ construction

    def _build(self) -> None:
        """Modules, optimiser and state from ``self.cfg``; torch's global RNG is left as it was.

        The field's initial weights come from ``cfg.train.seed`` (drawn inside ``fork_rng``, so the
        process's RNG, which another map's trainer may be sampling from, is untouched) and the
        map's own :attr:`generator` (seeded from the same value) draws every training sample.
        """
        cfg = self.cfg
        with torch.random.fork_rng(devices=_cuda_indices(self.device)):
            torch.manual_seed(cfg.train.seed)
            self.field = build_field(cfg).to(self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed)
        self.objective = build_objective(cfg, self.field, self.generator)  # loss and rendering of the kind
        groups = [{"params": self.field.encoding_parameters(), "lr": cfg.train.lr, "eps": 1e-15},
                  {"params": self.field.network_parameters(), "lr": cfg.train.lr_mlp, "weight_decay": 1e-6}]
        groups = [g for g in groups if g["params"]]
        try:  # fused Adam: measured 2x faster than the default on the 4M-entry hash table on CPU
            self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), fused=True)
        except (RuntimeError, TypeError):  # torch builds without a fused kernel for this device
            self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99))
        self.keyframes = self._new_keyframes()
        self.coverage = Coverage(voxel_m=cfg.occupancy.resolution_m)
        self.region = RegionGuard(cfg.map)  # region of interest and pose plausibility (add_frame)
        self._lo: np.ndarray | None = None  # (3,) AABB of observed points (no margin)
        self._hi: np.ndarray | None = None
        self._pending: _DeviceScalars | None = None  # the last step's loss, not read back yet
        self.stats = MapperStats()
        self.last_terms = LossTerms()  # unweighted loss terms of the last step

    # the last step's loss and terms stay on the device until read: reading stats or last_terms copies them
    @property
    def stats(self) -> MapperStats:
        self._flush_pending()
        return self._stats

    @stats.setter
    def stats(self, value: MapperStats) -> None:
        self._pending = None
        self._stats = value

    @property
    def last_terms(self) -> LossTerms:
        self._flush_pending()
        return self._last_terms

    @last_terms.setter
    def last_terms(self, value: LossTerms) -> None:
        self._pending = None
        self._last_terms = value

    def _flush_pending(self) -> None:
        p = self._pending
        if p is not None:
            self._stats.last_loss = p.loss()
            self._last_terms = p.terms()
            if self._pending is p:
                self._pending = None

    def _new_keyframes(self) -> KeyframeBuffer:
        c = self.cfg
        return KeyframeBuffer(c.keyframes, self.device, c.render.min_depth_m, c.render.max_depth_m,
                              seed=c.train.seed, edge_jump_m=c.train.edge_jump_m)

    def reset(self) -> None:
        """Forget everything: weights, keyframes, coverage, bounds, counters."""
        with self.lock:
            self._build()

    @property
    def kind(self) -> str:
        return self.cfg.field.kind

    # ------------------------------------------------------------------ input

    def _reject(self, reason: str) -> bool:
        self._stats.frames_rejected += 1
        reasons = self._stats.reject_reasons  # reasons carry figures: at most MAX_REJECT_REASONS kept apart
        key = reason if reason in reasons or len(reasons) < MAX_REJECT_REASONS - 1 else "other reasons"
        reasons[key] = reasons.get(key, 0) + 1
        self.reject_warn("frames_rejected", f"frame rejected: {reason}")
        return False

    def add_frame(self, frame: Frame) -> bool:
        """Take a frame for training. False (and counted in ``stats``) when it is unusable."""
        if not isinstance(frame, Frame):
            return self._reject(f"not a Frame: {type(frame).__name__}")
        try:
            frame.validate()
        except FrameError as e:
            return self._reject(f"invalid frame: {e}")
        frame, why = self.region.admit(frame, self.bounds())  # an absurd pose must not grow the map
        if why:
            return self._reject(why)
        r = self.cfg.render
        d = frame.depth_m
        ok = (d > r.min_depth_m) & (d < r.max_depth_m)
        n_ok = int(ok.sum())
        if n_ok < MIN_VALID_PIXELS:
            return self._reject(f"only {n_ok} depth pixels in [{r.min_depth_m}, {r.max_depth_m}] m")
        with self.lock:
            usable, is_kf = self.keyframes.add(frame, self.generator)
            if not usable:
                return self._reject("no usable depth after downsampling")
            d_ok = np.where(ok, d, 0).astype(np.float32)
            prior = getattr(self.field, "prior", None)
            if prior is not None:  # every frame reaches the fused prior, keyframe or not
                prior.integrate(d_ok, frame.K, frame.T_WC)
            pts = backproject_depth(d_ok, frame.K, frame.T_WC, stride=4)
            if len(pts):  # the observed points and the camera
                cam = frame.T_WC[:3, 3]
                lo, hi = np.minimum(pts.min(0), cam), np.maximum(pts.max(0), cam)
                self._lo = lo if self._lo is None else np.minimum(self._lo, lo)
                self._hi = hi if self._hi is None else np.maximum(self._hi, hi)
            if is_kf or self._stats.frames_added == 0:
                # non-keyframes lie close to a keyframe and add little coverage; skipping them
                # saves ~40 ms per 320x240 frame on 2 CPU cores (most of add_frame)
                self.coverage.update(frame, max_depth_m=r.max_depth_m)
            self._stats.frames_added += 1
            self._stats.keyframes = len(self.keyframes)
            self.region.accept(frame)
        return True

    def bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lo (3,), hi (3,)) of the observed region grown by ``cfg.field.margin_m``; None before any frame."""
        if self._lo is None:
            return None
        m = self.cfg.field.margin_m
        return self._lo - m, self._hi + m

    # ------------------------------------------------------------------ training

    def step(self, n: int = 1) -> StepStats:
        """n optimisation steps; returns the stats of the last (rays/samples/seconds summed).

        No host sync on the way (CUDA: the host queues the steps and returns): the loss and terms
        stay on the device until ``StepStats.loss`` / ``stats.last_loss`` / ``last_terms`` is read
        (tests/test_sync_free.py)."""
        t0 = time.perf_counter()
        rays = samples = 0
        with self.lock:
            if self.keyframes.latest is None:
                return StepStats(float("nan"), LossTerms(), 0, 0, 0.0)
            self.field.train()
            for _ in range(n):
                batch = self.keyframes.sample(self.cfg.train.rays_per_step, self.cfg.train.latest_frame_fraction,
                                              generator=self.generator)
                total, terms, ray_loss, ns = self.objective.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                self.keyframes.update_losses(batch.source, ray_loss)
                rays += len(batch)
                samples += ns
                self._stats.steps += 1
            dt = time.perf_counter() - t0
            pending = _DeviceScalars(total, terms)
            self._pending = pending
            self._stats.rays_trained += rays
            self._stats.samples_trained += samples
            self._stats.train_seconds += dt
        return StepStats(pending, None, rays, samples, dt)

    def train_for(self, seconds: float) -> int:
        """Train until ``seconds`` have passed (at least one step if any frame); returns steps done."""
        t_end = time.perf_counter() + seconds
        n = 0
        while True:
            st = self.step(1)
            if st.rays == 0:
                break
            n += 1
            if time.perf_counter() >= t_end:
                break
        return n

    # ------------------------------------------------------------------ queries

    def query(self, pts_W: np.ndarray, want_gradient: bool = False, want_color: bool = False,
              chunk: int = 65536) -> QueryResult:
        """Field values at points pts_W (N, 3) in the map frame (see QueryResult)."""
        pts_np = np.asarray(pts_W, dtype=np.float32)
        if pts_np.ndim != 2 or pts_np.shape[1] != 3:
            raise ValueError(f"query: pts_W must be (N, 3), got {pts_np.shape}")
        N = pts_np.shape[0]
        vals = np.empty(N, np.float32)
        grads = np.empty((N, 3), np.float32) if want_gradient else None
        cols = np.empty((N, 3), np.float32) if want_color else None
        need_grad = want_gradient or want_color
        with self.lock:
            self.field.eval()
            # value + gradient without autograd (one forward keeping activation derivatives, the
            # vjp of the value output only; hash-grid jacobian from the fused kernel); fields the
            # fast path does not cover take the autograd reference
            grad_fn = (fastquery.value_and_gradient if fastquery.supports(self.field)
                       else fastquery.autograd_value_and_gradient)
            for s in range(0, N, chunk):
                p = torch.from_numpy(pts_np[s:s + chunk]).to(self.device)
                if want_color:  # colour seen head-on (view along the gradient), computed per block
                    v, g, c = fastquery.value_gradient_color(self.field, p)
                    cols[s:s + chunk] = c.cpu().numpy()
                elif need_grad:
                    v, g, _ = grad_fn(self.field, p)
                else:
                    v = fastquery.value(self.field, p)
                vals[s:s + chunk] = v.cpu().numpy()
                if want_gradient:
                    grads[s:s + chunk] = g.cpu().numpy()
        occ = self.occupancy_from_value(vals)
        observed = self.coverage.observed(pts_np.astype(np.float64)) if N else np.zeros(0, bool)
        occ = np.where(observed, occ, 0.5).astype(np.float32)
        return QueryResult(vals, grads, occ, cols)

    def occupancy_from_value(self, vals: np.ndarray) -> np.ndarray:
        """Occupancy probability from field values (the objective's rule: sigmoid(-sdf / (tr / 10))
        for sdf, 1 - exp(-density * occupancy.resolution_m) for nerf)."""
        return self.objective.occupancy_from_value(vals)

    # ------------------------------------------------------------------ rendering

    def render(self, T_WC: np.ndarray, K: np.ndarray, H: int, W: int, chunk: int = 8192) -> RenderResult:
        """Colour, z-depth and opacity images seen from camera pose T_WC (4x4) with intrinsics K."""
        b = self.bounds()
        if b is None:
            return RenderResult(np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32),
                                np.zeros((H, W), np.float32))
        with self.lock:
            self.field.eval()
            o, d = image_rays_W(np.asarray(T_WC, np.float64), np.asarray(K, np.float64), H, W, device=self.device)
            lo, hi = (torch.as_tensor(x, dtype=torch.float32, device=self.device) for x in b)
            color, depth, opac = self.objective.render_image(o, d, lo, hi, chunk)
        return RenderResult(color.reshape(H, W, 3), depth.reshape(H, W), opac.reshape(H, W))

    # ------------------------------------------------------------------ copies

    def snapshot(self, into: "Mapper | None" = None) -> "Mapper":
        """A copy of the map for products and readers: weights, bounds, counters and the coverage
        (deep-copied with its per-block update stamps); no keyframes, no optimiser state.

        Only the copying holds ``self.lock`` (~10-30 ms at the cpu preset); the copy is then
        independent, so products computed on it leave training free. ``into`` (an earlier copy of
        this map, same device) is refreshed in place: with an unchanged config its modules are
        reused (3-19 ms; a new Mapper costs ~0.15-0.25 s) and it stays the same object, so a mesh
        extractor kept on it keeps its tile cache. Neither this map's sample sequence nor torch's
        global RNG is touched.
        """
        import copy

        with self.lock:
            sd = self.state_dict(include_coverage=False)  # weights cloned, bounds and counters copied
            coverage = copy.deepcopy(self.coverage)
        if into is not None and type(into) is type(self) and into.device == self.device:
            into.load_state_dict(sd, coverage=coverage)
            return into
        return type(self).from_state_dict(sd, device=self.device, coverage=coverage)

    # ------------------------------------------------------------------ persistence

    def state_dict(self, include_keyframes: bool = False, include_coverage: bool = True) -> dict:
        """Everything needed to restore the map (cfg as dict, weights, coverage, bounds, counters).

        ``include_keyframes`` adds the keyframe buffer and the optimiser state, so training
        can resume exactly; without them the map answers queries and renders identically.
        ``include_coverage=False`` leaves the coverage out (give one to :meth:`load_state_dict`).
        """
        with self.lock:
            d = {
                "version": STATE_VERSION,
                "kind": self.kind,
                "cfg": to_dict(self.cfg),
                "field": {k: v.detach().cpu().clone() for k, v in self.field.state_dict().items()},
                "bounds_lo": None if self._lo is None else self._lo.copy(),
                "bounds_hi": None if self._hi is None else self._hi.copy(),
                "stats": dataclasses.asdict(self.stats),
            }
            if include_coverage:
                d["coverage"] = self.coverage.state_dict()
            if include_keyframes:
                d["keyframes"] = self.keyframes.state_dict()
                d["optimizer"] = self.optimizer.state_dict()
                d["generator"] = self.generator.get_state()
            return d

    def load_state_dict(self, d: dict, coverage: Coverage | None = None) -> None:
        """Restore from :meth:`state_dict` (the config in ``d`` replaces this mapper's).

        With the config this mapper already has, its modules are kept and the weights copied into
        them: no re-initialisation (a hash table the weights then overwrite costs ~0.2 s at the
        cpu preset); the optimiser state is cleared, the keyframes emptied and the generator
        reseeded, as a rebuild would, unless ``d`` holds them. Another config rebuilds everything
        (initialised from its seed; torch's global RNG is never touched). ``coverage`` (a
        :class:`Coverage`, e.g. a deep copy that keeps its per-block update stamps) is used
        instead of ``d``'s.
        """
        if not isinstance(d, dict) or "field" not in d or "cfg" not in d:
            raise ValueError("not a Mapper state dict (missing 'field' or 'cfg')")
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"Mapper state version {d.get('version')!r} is not supported (expected {STATE_VERSION})")
        if coverage is None and "coverage" not in d:
            raise ValueError("the state dict has no coverage and none was given")
        with self.lock:
            if d["cfg"] == to_dict(self.cfg):
                self.optimizer.state.clear()
                self.keyframes = self._new_keyframes()
                self.generator.manual_seed(self.cfg.train.seed)
                self.last_terms = LossTerms()
            else:
                self.cfg = from_dict(d["cfg"])
                self._build()
            self.field.load_state_dict({k: v.to(self.device) for k, v in d["field"].items()})  # copies in place
            if coverage is not None:
                self.coverage = coverage
            else:
                self.coverage = Coverage(voxel_m=self.cfg.occupancy.resolution_m)
                self.coverage.load_state_dict(d["coverage"])
            self._lo = None if d["bounds_lo"] is None else np.asarray(d["bounds_lo"], np.float64)
            self._hi = None if d["bounds_hi"] is None else np.asarray(d["bounds_hi"], np.float64)
            st = dict(d.get("stats", {}))
            known = {f.name for f in dataclasses.fields(MapperStats)}
            self.stats = MapperStats(**{k: v for k, v in st.items() if k in known})
            if "keyframes" in d:
                self.keyframes.load_state_dict(d["keyframes"])
            if "optimizer" in d:
                self.optimizer.load_state_dict(d["optimizer"])
            if "generator" in d:
                self.generator.set_state(d["generator"])
            self.stats.keyframes = len(self.keyframes)

    @classmethod
    def from_state_dict(cls, d: dict, device: str | torch.device | None = None,
                        coverage: Coverage | None = None) -> "Mapper":
        cfg = from_dict(d["cfg"])
        m = cls(cfg, device=device)
        m.load_state_dict(d, coverage=coverage)
        return m
