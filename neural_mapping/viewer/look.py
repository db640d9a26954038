"""Looking through the field: the browser camera as ``T_WC`` and renders from it, at a bounded rate.

The camera convention, once:

- viser reports a client's camera as ``wxyz`` (a unit quaternion, scalar first) and ``position``,
  the R and t of ``p_world = R @ p_camera + t`` with camera axes as OpenCV's (x right, y down,
  z forward: viser's documented convention for every camera of its Python API), ``fov`` (the
  *vertical* field of view, radians) and ``aspect`` (canvas width / height).
- The viewer adds every geometry in map coordinates (no transform on the scene root), so viser's
  world is the map frame and ``T_WC = [[R, t], [0, 0, 0, 1]]`` is exactly the camera-to-map pose
  that :meth:`Mapper.render` and ``neural-mapping render --pose`` take (OpenCV axes, see
  :mod:`neural_mapping.camera`). No axis flip is needed; three.js's own camera looks down -z
  with y up, and viser converts to the OpenCV frame before it reports it.
- Intrinsics of a ``W x H`` render: square pixels, ``fy = fx = (H / 2) / tan(fov / 2)`` and the
  principal point at the image centre in this project's pixel convention (pixel (u, v) is centred
  at (u, v), so the image spans [-0.5, W - 0.5]): ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``.

Renders run as jobs on the trainer between two steps (``core.run``), at most one per
``min_interval_s``, and only once the camera has not moved for ``settle_s``.
A render is a preview (:mod:`neural_mapping.preview_render`, the default: every second pixel
first, then every pixel) or the full render (``Mapper.render``, what ``neural-mapping render``
writes), chosen by the panel's "Quality".
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from neural_mapping.camera import intrinsics, make_T

MODES = ("color", "depth", "normals")
#: "preview": :func:`neural_mapping.preview_render.preview` (sphere tracing near observed surfaces,
#: fast); "full": :meth:`Mapper.render`, exactly what ``neural-mapping render`` writes
QUALITIES = ("preview", "full")
#: the first pass of a preview renders every PROGRESSIVE_SCALE-th pixel of each row and column
PROGRESSIVE_SCALE = 2
#: pixels of one render job: the trainer steps between two bands (about 0.1-0.3 s each on 2 cores)
BAND_PIXELS = 16384


def quat_wxyz_to_R(wxyz) -> np.ndarray:
    """Rotation matrix of a unit quaternion given scalar first (viser's order; camera.quat_to_R takes xyzw)."""
    w, x, y, z = (float(v) for v in np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz))
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def R_to_wxyz(R: np.ndarray) -> np.ndarray:
    """The inverse of :func:`quat_wxyz_to_R` (w >= 0)."""
    from neural_mapping.camera import R_to_quat

    x, y, z, w = R_to_quat(np.asarray(R, np.float64))
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def camera_T_WC(wxyz, position) -> np.ndarray:
    """Camera-to-map pose (OpenCV axes) of a viser camera (see the module doc)."""
    return make_T(quat_wxyz_to_R(wxyz), np.asarray(position, np.float64))


def camera_K(fov_rad: float, width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics of a ``width x height`` image with vertical field of view ``fov_rad``."""
    if not 0 < fov_rad < math.pi:
        raise ValueError(f"vertical fov must be in (0, pi), got {fov_rad}")
    f = 0.5 * height / math.tan(0.5 * fov_rad)
    return intrinsics(f, f, 0.5 * (width - 1), 0.5 * (height - 1))


def render_size(height: int, aspect: float) -> tuple[int, int]:
    """(W, H) of a render ``height`` rows tall at the browser's aspect ratio."""
    H = max(8, int(height))
    return max(8, int(round(H * float(aspect)))), H


@dataclass
class LookRequest:
    T_WC: np.ndarray  # (4, 4) camera-to-map, OpenCV axes
    fov_rad: float  # vertical
    aspect: float  # width / height
    height: int  # rows of the render
    mode: str  # one of MODES
    quality: str = "preview"  # one of QUALITIES
    scale: int = 1  # preview only: rays every `scale` pixels, each repeated over a scale x scale block

    def key(self) -> tuple:
        return (np.round(self.T_WC, 5).tobytes(), round(self.fov_rad, 5), round(self.aspect, 4), self.height, self.mode,
                self.quality, self.scale)


def render_look(run_job: Callable, req: LookRequest) -> tuple[np.ndarray, dict]:
    """The image (H, W, 3) uint8 that the look-through panel shows, and what it took ({'seconds',
    'hit', 'W', 'H', 'bands'}). Rendered in bands of rows of at most BAND_PIXELS pixels, each one job
    ``run_job(fn)`` (``core.run``: on the trainer, so training steps run between two bands; or
    ``fn(mapper)`` directly). A band is ``Mapper.render`` with the principal point moved up by its
    first row, so its rays are those of the whole image's rows. Colour as rendered; depth as a grey
    ramp (near bright) over the hit range; normals are the field's gradient at the hit points, world
    frame, shown as (n + 1) / 2 (sdf: the gradient; nerf: minus the density gradient). ``req.quality``:
    "full" renders with ``Mapper.render`` (what ``neural-mapping render`` writes), "preview" with
    :func:`neural_mapping.preview_render.preview` (candidate cells computed once, in the first band)."""
    if req.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {req.mode!r}")
    if req.quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {req.quality!r}")
    t0 = time.perf_counter()
    W, H = render_size(req.height, req.aspect)
    K = camera_K(req.fov_rad, W, H)
    color = np.zeros((H, W, 3), np.float32)
    depth = np.zeros((H, W), np.float32)
    sc = max(1, int(req.scale)) if req.quality == "preview" else 1
    rows = max(sc, (BAND_PIXELS * sc * sc // W) // sc * sc)  # whole blocks of scale x scale pixels per band
    cache: dict = {}
    for r0 in range(0, H, rows):
        h = min(rows, H - r0)
        Kb = K.copy()
        Kb[1, 2] -= r0

        def band(m, Kb=Kb, h=h):
            if req.quality == "preview":
                from neural_mapping.preview_render import candidates, preview

                if "cand" not in cache:  # once per image: every band sees the same map state's cells
                    cache["cand"] = candidates(m)
                p = preview(m, req.T_WC, Kb, h, W, cand=cache["cand"], scale=sc)
                return p.color, p.depth, (0.5 * (p.normals + 1.0) * p.hit[..., None] if req.mode == "normals" else None)
            r = m.render(req.T_WC, Kb, h, W)
            return r.color, r.depth, (normals_image(m, req.T_WC, Kb, r.depth) if req.mode == "normals" else None)

        c, d, n = run_job(band)
        color[r0:r0 + h] = n if n is not None else c
        depth[r0:r0 + h] = d
    img = depth_image(depth) if req.mode == "depth" else color
    out = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out, {"seconds": time.perf_counter() - t0, "hit": float((depth > 0).mean()), "W": W, "H": H,
                 "bands": -(-H // rows), "quality": req.quality, "scale": sc}


def depth_image(depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1]: near hits bright, far ones dark, no hit black."""
    hit = depth > 0
    out = np.zeros(depth.shape + (3,), np.float32)
    if hit.any():
        lo, hi = float(depth[hit].min()), float(depth[hit].max())
        g = 1.0 - 0.8 * (depth - lo) / max(hi - lo, 1e-6)
        out[hit] = g[hit, None]
    return out


def normals_image(mapper, T_WC: np.ndarray, K: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) float: world-frame unit normals of the field at the rendered hit points, as (n + 1) / 2."""
    H, W = depth.shape
    out = np.zeros((H, W, 3), np.float32)
    hit = depth > 0
    if not hit.any():
        return out
    v, u = np.nonzero(hit)
    z = depth[v, u].astype(np.float64)
    pts_C = np.column_stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
    pts_W = pts_C @ T_WC[:3, :3].T + T_WC[:3, 3]
    g = mapper.query(pts_W, want_gradient=True).gradient.astype(np.float64)
    if mapper.cfg.field.kind != "sdf":
        g = -g  # density grows into the surface: the outward normal is minus its gradient
    n = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)
    out[v, u] = (0.5 * (n + 1.0)).astype(np.float32)
    return out


class LookThrough:
    """Renders for the look-through panel, debounced and rate bounded.

    ``camera_moved(req)`` records the latest camera; ``poll()`` (called by
    :meth:`run_forever`'s thread) renders it with ``render_look(run_job, req)`` once
    it has been still for ``settle_s`` and at least ``min_interval_s`` after the previous render and long enough after it that rendering takes at
    most ``duty`` of the wall time (a 2 s render at duty 0.1 waits 18 s),
    and hands the image to ``show(img, info)``. ``force()`` renders again at the next poll (the map
    changed, or the mode or resolution did).
    """

    def __init__(self, run_job: Callable, show: Callable[[np.ndarray, dict], None], *, settle_s: float = 0.25,
                 min_interval_s: float = 1.0, duty: float = 0.1, ready: Callable[[], bool] = lambda: True) -> None:
        self.run_job, self.show = run_job, show
        self.settle_s, self.min_interval_s, self.duty = float(settle_s), float(min_interval_s), float(duty)
        self._next_ok = 0.0  # monotonic time before which no render starts (min_interval_s, duty)
        self.enabled = True
        self.progressive = True  # previews in two passes (see poll)
        self.ready = ready  # False while there is nothing worth rendering (an untrained map)
        self._req: LookRequest | None = None
        self._moved_at = 0.0
        self._last_key: tuple | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.renders = 0
        self.last_info: dict = {}
        self.last_request: LookRequest | None = None
        self.last_image: np.ndarray | None = None

    def camera_moved(self, req: LookRequest) -> None:
        with self._lock:
            self._req, self._moved_at = req, time.monotonic()
        self._wake.set()

    def force(self) -> None:
        with self._lock:
            self._last_key = None
        self._wake.set()

    def due(self, now: float | None = None) -> LookRequest | None:
        """The request to render now, or None (nothing new, still moving, or too soon)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            req = self._req
            if not self.enabled or req is None or req.key() == self._last_key or not self.ready():
                return None
            if now - self._moved_at < self.settle_s or now < self._next_ok:
                return None
            return req

    def poll(self) -> bool:
        """Render if due (see the class doc); True when it rendered."""
        req = self.due()
        if req is None:
            return False
        with self._lock:
            self._last_key = req.key()
        t0 = time.monotonic()
        # a preview comes in two passes: every PROGRESSIVE_SCALE-th pixel first (a quarter of the rays,
        # shown at once), then every pixel unless the camera moved meanwhile
        passes = ([replace(req, scale=PROGRESSIVE_SCALE), req] if req.quality == "preview" and req.scale == 1
                  and self.progressive else [req])
        try:
            for i, r in enumerate(passes):
                if i and self._req is not req:
                    break
                img, info = render_look(self.run_job, r)
                self.renders += 1
                self.last_info, self.last_request, self.last_image = info, r, img
                self.show(img, info)
        finally:
            spent = time.monotonic() - t0
            self._next_ok = time.monotonic() + max(self.min_interval_s - spent, spent * (1.0 / self.duty - 1.0))
        return True

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if not self.poll():
                    self._wake.wait(0.05)
                    self._wake.clear()
            except Exception as e:  # noqa: BLE001 - a failed render must not end the viewer
                self.last_info = {"error": f"{type(e).__name__}: {e}"}
                stop.wait(0.5)
