"""The node's products: a scheduler over :class:`Product` records, each computed on the core's map copy.

Every product (mesh, occupancy, voxels, esdf, render) is computed from
``OnlineMapper.map_copy()``: a private copy of the map refreshed between two training steps,
so products never hold the live map's lock and training goes on meanwhile. Each product
has its own rate timer (steady clock) that only marks it due; one runner timer computes the
product due the longest, within the duty budget ``product_duty_max``.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker

from neural_mapping.camera import scale_intrinsics
from neural_mapping.ros import convert_out as co
from neural_mapping.ros import heap
from neural_mapping.ros.fastpath import mesh_to_marker_cdr

#: map products: reliable + transient local, so a late RViz or planner still gets the last one
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RENDER_FRAME = "neural_mapper_render"
#: window of the achieved rates reported in the status (s)
ACHIEVED_WINDOW_S = 120.0


@dataclass
class Product:
    """One published product and its schedule."""

    name: str  # "mesh", ... (as in ~/status products_s)
    rate_param: str  # the node parameter of its rate (Hz, 0 = off)
    publish: Callable[[], None]  # compute on the map copy and publish
    only_when_changed: bool = False  # skipped while the map's steps are those last published
    due_since: float | None = None  # monotonic time it became due (None: not due)
    last_seconds: float | None = None  # duration of its last computation
    published_at: tuple[int, int] | None = None  # (lineage, steps) of the map copy last published
    timer: object = None
    served: deque = field(default_factory=lambda: deque(maxlen=256))  # monotonic times its ticks were served

    def achieved_hz(self, now: float, since: float) -> float:
        """Ticks served per second over the last :data:`ACHIEVED_WINDOW_S` (or since ``since``).

        From the intervals between the ticks served in the window: (n - 1) / (last - first), and no
        more than n / (now - first), so a product that stopped being served falls. A count of the
        ticks in the window (n / window) is off by up to one tick whenever the window is not a whole
        number of periods: a 50 s period read 2 or 3 ticks in 120 s, 0.017 or 0.025 Hz, and the soak
        reported 0.83x of 0.02 Hz for products served on every tick.
        """
        span = min(ACHIEVED_WINDOW_S, now - since)
        if span <= 1.0:
            return 0.0
        ts = [t for t in self.served if now - t <= span]
        if len(ts) < 2:
            return len(ts) / span
        return min((len(ts) - 1) / max(ts[-1] - ts[0], 1e-6), len(ts) / max(now - ts[0], 1e-6))


def occupied_centres(grid) -> np.ndarray:
    """Centres (N, 3) of the occupied voxels (value 100) of an OccupancyGrid3D."""
    occ = np.asarray(grid.data).reshape(-1) >= 100
    if not occ.any():
        return np.zeros((0, 3))
    return grid.centers()[occ]


def esdf_points(es, z: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) cell centres at height z and (N,) distances of the known cells of an EsdfSlice."""
    d = np.asarray(es.distance, dtype=np.float64)
    H, W = d.shape
    jj, ii = np.mgrid[0:H, 0:W]
    x = es.origin_xy[0] + (ii + 0.5) * es.resolution
    y = es.origin_xy[1] + (jj + 0.5) * es.resolution
    keep = np.isfinite(d)
    pts = np.stack([x[keep], y[keep], np.full(int(keep.sum()), z)], axis=1)
    return pts, d[keep]


def render_camera(frame, render_T_WC, H: int, W: int):
    """(T_WC, K) of the published view, H x W: at ``render_T_WC`` if set, else at the latest frame's pose;
    the latest frame's intrinsics resized to H x W (None without any pose)."""
    T = render_T_WC if render_T_WC is not None else (None if frame is None else frame.T_WC)
    if T is None:
        return None
    if frame is not None:
        K = scale_intrinsics(frame.K, W / frame.width, H / frame.height)
    else:  # a 60 degree horizontal field of view
        f = 0.5 * W / np.tan(np.radians(30.0))
        K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
    return T, K


class Publishing:
    """Publishers, rate timers and the product runner of one node."""

    def __init__(self, node) -> None:
        self.node = node
        self.core = node.core
        self.runner = None
        self.last_error = ""
        self._next_allowed = 0.0  # monotonic time before which no product starts (duty budget)
        self.eligible_since: float | None = None  # when products could first be computed (a map, enough steps)
        self._mesh_extractor = None  # MeshExtractor of the products' copy of the map (keeps its tile cache)
        pub = node.publisher
        self.pub_mesh = pub(Marker, "~/mesh", LATCHED)
        self.pub_occ = pub(OccupancyGrid, "~/occupancy", LATCHED)
        self.pub_voxels = pub(PointCloud2, "~/occupied_voxels", LATCHED)
        self.pub_esdf = pub(PointCloud2, "~/esdf_slice", LATCHED)
        self.pub_color = pub(Image, "~/rendered/color", LATCHED)
        self.pub_depth = pub(Image, "~/rendered/depth", LATCHED)
        self.pub_info = pub(CameraInfo, "~/rendered/camera_info", LATCHED)
        self.products = {p.rate_param: p for p in [
            Product("mesh", "mesh_rate_hz", self._publish_mesh, only_when_changed=True),
            Product("occupancy", "occupancy_rate_hz", self._publish_occupancy),
            Product("voxels", "voxels_rate_hz", self._publish_voxels, only_when_changed=True),
            Product("esdf", "esdf_rate_hz", self._publish_esdf),
            Product("render", "render_rate_hz", self._publish_render),
        ]}

    # ------------------------------------------------------------------ schedule

    def create_runner(self, callback_group) -> None:
        """The timer that computes due products (every 50 ms, steady clock)."""
        self.runner = self.node.create_timer(0.05, self.run_due, callback_group=callback_group, clock=self.node.steady)

    def set_rate(self, rate_param: str, rate_hz: float, callback_group) -> None:
        """(Re)start the rate timer of a product; 0 Hz switches it off."""
        p = self.products[rate_param]
        if p.timer is not None:
            p.timer.cancel()
            self.node.destroy_timer(p.timer)
            p.timer = None
        if rate_hz > 0:
            # rate timers are cheap (they mark the product due) and never wait for the runner
            p.timer = self.node.create_timer(1.0 / rate_hz, lambda: self._mark_due(p), callback_group=callback_group,
                                             clock=self.node.steady)

    @staticmethod
    def _mark_due(p: Product) -> None:
        if p.due_since is None:
            p.due_since = time.monotonic()

    def run_due(self) -> None:
        """Compute the product due the longest, within the duty budget (fair: oldest due first).

        Products share ``product_duty_max``: after a product took d seconds, the next one
        starts no earlier than d * (1/duty - 1) later, so training keeps most of the time.
        """
        node = self.node
        now = time.monotonic()
        due = [p for p in self.products.values() if p.due_since is not None]
        if now < self._next_allowed or not due or not node.has_map():
            return
        if self.core.mapper.stats.steps < node.ncfg.products_min_steps:
            return
        if self.eligible_since is None:
            self.eligible_since = now
        p = min(due, key=lambda q: q.due_since)
        p.due_since = None
        try:
            p.publish()
            p.served.append(time.monotonic())
        except Exception as e:  # noqa: BLE001 - a failing product must not stop the node
            if node.stopping:
                return  # shutting down: the publishers are gone
            self.last_error = f"{p.rate_param}: {type(e).__name__}: {e}"
            node.warn(f"error_{p.rate_param}", f"publishing for {p.rate_param} failed: {e}\n{traceback.format_exc()}")
        finally:
            heap.trim()  # the product's temporaries: their pages back to the system (ros/heap.py)
            end = time.monotonic()
            p.last_seconds = end - now
            self._next_allowed = end + (end - now) * (1.0 / node.ncfg.product_duty_max - 1.0)

    def seconds_summary(self) -> str:
        """``mesh=0.12 occupancy=0.03 ...``: the last computation time of each product computed so far."""
        done = sorted((p.name, p.last_seconds) for p in self.products.values() if p.last_seconds is not None)
        return " ".join(f"{k}={v:.3g}" for k, v in done)

    def achieved_hz(self) -> dict[str, float]:
        """{product name: ticks served per second since products could first be computed (at most the
        last :data:`ACHIEVED_WINDOW_S`)} (the status's ``<name>_hz_achieved``; 0 before)."""
        now, since = time.monotonic(), self.eligible_since
        return {p.name: 0.0 if since is None else p.achieved_hz(now, since) for p in self.products.values()}

    def cancel(self) -> None:
        for p in self.products.values():
            if p.timer is not None:
                p.timer.cancel()
        if self.runner is not None:
            self.runner.cancel()

    def on_reset(self) -> None:
        """After the map was reset: an empty mesh replaces the latched one."""
        self.pub_mesh.publish(co.mesh_to_marker(co.EmptyMesh(), self.node.ncfg.map_frame, self.node.now_ns()))

    # ------------------------------------------------------------------ products

    def _unchanged(self, p: Product) -> bool:
        return p.published_at == (self.core.lineage, self.core.mapper.stats.steps)

    def _publish_mesh(self) -> None:
        """Mesh the products' copy of the map with one MeshExtractor per copy (map lineage), so
        ``extract(full=False)`` recomputes only the tiles whose coverage or field changed.

        The copy is refreshed in place (``OnlineMapper.snapshot``) and nobody else refreshes it
        while ``map_copy`` is held, so the extractor meshes it without a copy of its own
        (snapshot=False) and without holding the live mapper's lock.
        """
        from neural_mapping.products import MeshExtractor

        p = self.products["mesh_rate_hz"]
        ex = self._mesh_extractor
        pending = ex is not None and ex.stats.tiles_pending > 0  # a budgeted update left tiles for later
        if self._unchanged(p) and not pending:
            return
        lineage = self.core.lineage
        with self.core.map_copy() as snap:
            if ex is None or ex.mapper is not snap:
                ex = self._mesh_extractor = MeshExtractor(snap, snapshot=False)
            mesh = ex.extract(full=False, budget_s=self.node.ncfg.mesh_budget_s or None)
            steps = snap.stats.steps
        if lineage != self.core.lineage:
            return  # reset or loaded meanwhile: this mesh is of a map that is gone
        self.pub_mesh.publish(self._marker(mesh))
        p.published_at = (lineage, steps)

    def _marker(self, mesh):
        """The mesh Marker, serialized (``mesh_to_marker_cdr``: bytes spliced without a Point object each)."""
        return mesh_to_marker_cdr(mesh, self.node.ncfg.map_frame, self.node.now_ns())

    def occupancy_msg(self, snap):
        """The 2D occupancy grid of a map copy between occupancy.z_min and z_max."""
        from neural_mapping.products import occupancy_slice_2d

        o = self.node.mcfg.occupancy
        sl = occupancy_slice_2d(snap, o.z_min, o.z_max, snap.cfg.occupancy.resolution_m)
        return co.occupancy_to_msg(sl, self.node.ncfg.map_frame, self.node.now_ns(), z_m=o.z_min)

    def _publish_occupancy(self) -> None:
        with self.core.map_copy() as snap:
            self.pub_occ.publish(self.occupancy_msg(snap))

    def _publish_voxels(self) -> None:
        from neural_mapping.products import occupancy_grid_3d

        p = self.products["voxels_rate_hz"]
        if self._unchanged(p):
            return
        lineage = self.core.lineage
        with self.core.map_copy() as snap:
            grid = occupancy_grid_3d(snap)
            steps = snap.stats.steps
        self.pub_voxels.publish(co.points_to_cloud(occupied_centres(grid), self.node.ncfg.map_frame, self.node.now_ns()))
        p.published_at = (lineage, steps)

    def _publish_esdf(self) -> None:
        from neural_mapping.products import esdf_slice

        z = self.node.mcfg.occupancy.esdf_height
        with self.core.map_copy() as snap:
            es = esdf_slice(snap, z, snap.cfg.occupancy.resolution_m)
        pts, dist = esdf_points(es, z)
        self.pub_esdf.publish(co.points_to_cloud(pts, self.node.ncfg.map_frame, self.node.now_ns(), dist, "distance"))

    def _publish_render(self) -> None:
        n = self.node.ncfg
        H, W = n.render_height, n.render_width
        cam = render_camera(self.core.latest_frame, self.node.inputs.render_T_WC, H, W)
        if cam is None:
            return
        T, K = cam
        with self.core.map_copy() as snap:
            r = snap.render(T, K, H, W)
        stamp = self.node.now_ns()
        self.pub_color.publish(co.rgb_to_image(r.color, RENDER_FRAME, stamp))
        self.pub_depth.publish(co.depth_to_image(r.depth, RENDER_FRAME, stamp))
        self.pub_info.publish(co.camera_info_msg(K, H, W, RENDER_FRAME, stamp))
