"""The node's services: query_field, render_view, save_map, load_map, reset, pause, get_map.

Services answer while training runs (own callback group, multi-threaded executor). Queries
and renders run on the trainer between two steps (``OnlineMapper.run``, warm OpenMP team);
get_map and save_map use the core's map copy; load_map and reset replace the map between two
steps. A service never holds the live map's lock on its own thread.
"""

from __future__ import annotations

import time
import traceback

import numpy as np
from nav_msgs.srv import GetMap
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_srvs.srv import SetBool, Trigger

from neural_mapping.mapfile import load_map, resolve_in_dir, save_map
from neural_mapping.ros import convert_out as co
from neural_mapping.ros.fastpath import QueryRequestArrays, points_array, use_arrays_for_queries
from neural_mapping.ros.render import RenderStopped, render_in_chunks
from neural_mapping_interfaces.srv import LoadMap, QueryField, RenderView, SaveMap

#: longest a pause request waits for the running training step before answering (s)
PAUSE_WAIT_S = 10.0

#: why a request needing the map is refused before the first frame
EMPTY_MAP = "the map is empty: no frames have been integrated yet"


class Services:
    """The services of one node (see the module doc)."""

    #: every service, by name (the robot node serves all; the fleet's map server names a few)
    NAMES = ("query_field", "render_view", "save_map", "load_map", "reset", "pause", "get_map")

    def __init__(self, node, callback_group, names: tuple[str, ...] = NAMES) -> None:
        self.node = node
        self.core = node.core
        # render_view in a group of its own: a long render (bands of rows, ros/render.py) leaves
        # query_field and the other services answering meanwhile
        render_group = MutuallyExclusiveCallbackGroup()
        for srv_type, name, fn in [(QueryField, "query_field", self.query_field),
                                   (RenderView, "render_view", self.render_view),
                                   (SaveMap, "save_map", self.save_map), (LoadMap, "load_map", self.load_map),
                                   (Trigger, "reset", self.reset), (SetBool, "pause", self.pause),
                                   (GetMap, "get_map", self.get_map)]:
            if name not in names:
                continue
            group = render_group if srv_type is RenderView else callback_group
            srv = node.create_service(srv_type, f"~/{name}", self._answer(name, fn), callback_group=group)
            if srv_type is QueryField:  # requests taken and gradients sent as numpy arrays (ros/fastpath.py)
                use_arrays_for_queries(srv, lambda msg: node.get_logger().warning(f"query_field: {msg}"))

    def _answer(self, name, fn):
        """Service callback: the trainer holds its next step while it runs (``OnlineMapper.reading``);
        an unexpected error is a failed response."""
        def run(req, resp):
            try:
                with self.core.reading():
                    return fn(req, resp)
            except Exception as e:  # noqa: BLE001 - answer, do not crash the node
                self.node.get_logger().error(f"{name} failed: {e}\n{traceback.format_exc()}")
                if hasattr(resp, "success"):
                    resp.success = False
                    resp.message = f"{name} failed: {type(e).__name__}: {e}"
                return resp
        return run

    def query_field(self, req, resp):
        arrays = isinstance(req, QueryRequestArrays)  # taken by ros/fastpath.py
        if arrays and req.error is not None:
            resp.success = False
            resp.message = f"the request could not be read: {req.error}"
            return resp
        n = len(req.points_xyz) if arrays else len(req.points)
        resp.success = False
        if n == 0:
            resp.message = "no points to query"
            return resp
        if n > self.node.ncfg.max_query_points:
            resp.message = f"{n} points is more than max_query_points ({self.node.ncfg.max_query_points})"
            return resp
        if not self.node.has_map():
            resp.message = EMPTY_MAP
            return resp
        t0 = time.perf_counter()
        pts = req.points_xyz if arrays else points_array(req.points)
        if not np.all(np.isfinite(pts)):
            resp.message = "points contain NaN or inf"
            return resp
        t1 = time.perf_counter()
        q = self.core.run(lambda m: m.query(pts, want_gradient=bool(req.want_gradient)))
        t2 = time.perf_counter()
        resp.sdf = co.float32_array(q.sdf)
        resp.occupancy = co.float32_array(q.occupancy)
        if req.want_gradient and q.gradient is not None:
            if hasattr(resp, "gradients_xyz"):  # sent without a Vector3 object each (ros/fastpath.py)
                resp.gradients_xyz = q.gradient
            else:
                resp.gradients = co.vectors_msgs(q.gradient)
        resp.success = True
        resp.message = (f"{n} points{' (taken as arrays)' if arrays else ''}: convert {1e3 * (t1 - t0):.0f} ms, "
                        f"query (incl. waiting for the running training step) {1e3 * (t2 - t1):.0f} ms, "
                        f"pack {1e3 * (time.perf_counter() - t2):.0f} ms")
        return resp

    def render_view(self, req, resp):
        resp.success = False
        ci = req.camera_info
        H, W = int(ci.height), int(ci.width)
        K = np.asarray(ci.k, dtype=np.float64).reshape(3, 3)
        if not (0 < H <= 4096 and 0 < W <= 4096):
            resp.message = f"camera_info size {W}x{H} must be within 1..4096"
            return resp
        limit = self.node.ncfg.render_max_pixels
        if H * W > limit:
            resp.message = (f"camera_info size {W}x{H} ({H * W} pixels) is more than render_max_pixels ({limit}); "
                            "ask for a smaller image")
            return resp
        if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
            resp.message = "camera_info.k must hold finite, positive focal lengths"
            return resp
        try:
            T = co.pose_to_T(req.pose)
        except ValueError as e:
            resp.message = f"pose: {e}"
            return resp
        if not self.node.has_map():
            resp.message = EMPTY_MAP
            return resp
        t0 = time.monotonic()
        try:  # bands of rows, each a job between training steps: queries are served in between
            color, depth = render_in_chunks(self.core, T, K, H, W, cancelled=lambda: self.node.stopping,
                                            deadline=t0 + self.node.ncfg.render_timeout_s)
        except RenderStopped as e:
            resp.message = str(e)
            return resp
        stamp = self.node.now_ns()
        frame_id = ci.header.frame_id or "neural_mapper_render"
        resp.color = co.rgb_to_image(color, frame_id, stamp)
        resp.depth = co.depth_to_image(depth, frame_id, stamp)
        resp.success = True
        resp.message = f"rendered {W}x{H} in {time.monotonic() - t0:.2f} s"
        return resp

    def _map_path(self, req, resp):
        """The file a save/load request names inside map_dir, or None with resp refused."""
        resp.success = False
        try:
            return resolve_in_dir(self.node.ncfg.map_dir, req.name)
        except ValueError as e:
            resp.message = f"refused: {e}"
            return None

    def save_map(self, req, resp):
        path = self._map_path(req, resp)
        if path is None:
            return resp
        if not self.node.has_map():  # as query_field: nothing to save yet
            resp.message = EMPTY_MAP + "; nothing saved"
            return resp
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self.core.map_copy() as snap:  # the map as of now; training goes on meanwhile
                save_map(snap, path)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            resp.message = f"saving {path} failed: {type(e).__name__}: {e}"
            return resp
        resp.path = str(path)
        resp.success = True
        resp.message = f"saved {path}"
        self.node.get_logger().info(resp.message)
        return resp

    def save_on_shutdown(self) -> None:
        """The map saved as ``shutdown_map_name`` in map_dir (the trainer has stopped; logged)."""
        req = SaveMap.Request(name=self.node.ncfg.shutdown_map_name)
        resp = self.save_map(req, SaveMap.Response())
        log = self.node.get_logger()
        (log.info if resp.success else log.error)(f"save_on_shutdown: {resp.message}")

    def load_map(self, req, resp):
        path = self._map_path(req, resp)
        if path is None:
            return resp
        if not path.is_file():
            resp.message = f"{path}: no such map file"
            return resp
        try:
            mapper = load_map(path, device=self.node.mcfg.device)
        except Exception as e:  # noqa: BLE001 - reported to the caller; the current map is kept
            resp.message = f"loading {path} failed: {type(e).__name__}: {e}"
            return resp
        self.core.swap(mapper)
        resp.success = True
        resp.message = f"loaded {path}"
        self.node.get_logger().info(resp.message)
        return resp

    def reset(self, req, resp):
        self.core.reset()
        self.node.publishing.on_reset()
        resp.success = True
        resp.message = "map reset"
        return resp

    def pause(self, req, resp):
        from rclpy.parameter import Parameter

        res = self.node.set_parameters([Parameter("paused", Parameter.Type.BOOL, bool(req.data))])[0]
        resp.success = bool(res.successful)
        resp.message = ("paused" if req.data else "resumed") if res.successful else res.reason
        # answer once no training step is running, so the map stays as it is now
        if res.successful and req.data and not self.core.set_paused(True, wait_s=PAUSE_WAIT_S):
            resp.message = f"paused (the running training step did not finish within {PAUSE_WAIT_S:.0f} s)"
        return resp

    def get_map(self, req, resp):
        if self.node.has_map():
            with self.core.map_copy() as snap:
                resp.map = self.node.publishing.occupancy_msg(snap)
        return resp
