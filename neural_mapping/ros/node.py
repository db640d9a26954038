"""ROS 2 node `neural_mapper` (executable `mapper_node`): converts and schedules, no math.

Data flow:
  subscriptions (sensor-data QoS) --convert (ros/convert.py)--> ApproxSync (ros/sync.py)
  --> Frame --> DropOldestQueue (bounded) --> training thread: Mapper.add_frame / Mapper.step
  publish timers (each at its own rate) --> products (reliable + transient local, map_frame)
  services (own callback group, MultiThreadedExecutor) answer while training runs.

Malformed messages are dropped with a throttled warning and counted in ~/status; the
node keeps mapping. All parameters come from ros/params.py (NodeConfig + MapperConfig).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue as queue_mod
import re
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

# The trainer's OpenMP threads (torch and the hash-grid kernel) spin while they wait for work. With
# libgomp's default (spin briefly, then sleep) every parallel region of a training step had to wake
# sleeping threads on a 2-core machine busy with the executor and DDS: bench_ros received 39-57 of
# 300 sets at 30 Hz and trained 0.3-1.6 steps/s, against 295-300 sets and 4.6-5.5 steps/s with
# ACTIVE (same code, quiet machine). Set before torch loads libgomp; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

import numpy as np  # noqa: E402

from neural_mapping.config import ConfigError  # noqa: E402
from neural_mapping.ros.params import RATE_PARAMS, NodeConfig, declare_all  # noqa: E402
from neural_mapping.frame_queue import DropOldestQueue  # noqa: E402

#: save/load names: one plain file name inside map_dir
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class StartupError(RuntimeError):
    """The node cannot start with these parameters (message says why and what to do)."""


def check_map_name(name: str) -> str | None:
    """None if ``name`` is an acceptable map file name, else the reason it is refused."""
    if not name:
        return "empty name"
    if "/" in name or "\\" in name or os.sep in name:
        return f"name {name!r} contains a path separator; give a plain file name inside map_dir"
    if ".." in name:
        return f"name {name!r} contains '..'"
    if not _NAME_RE.match(name):
        return f"name {name!r} has characters other than letters, digits, '_', '-', '.' or starts with '.'"
    return None


def resolve_in_dir(map_dir: str, name: str) -> Path:
    """Absolute path of ``name`` inside ``map_dir``; ValueError if it would leave the directory."""
    why = check_map_name(name)
    if why:
        raise ValueError(why)
    root = Path(os.path.expanduser(map_dir)).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ValueError(f"name {name!r} resolves outside map_dir {root}")
    return path


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


def _gpu_mb() -> float:
    try:
        import torch

        return torch.cuda.memory_allocated() / 1e6 if torch.cuda.is_available() else 0.0
    except Exception:  # noqa: BLE001 - statistics only
        return 0.0


def _make_node_class():
    """The Node subclass (defined lazily so importing this module does not need rclpy)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import OccupancyGrid, Odometry
    from nav_msgs.srv import GetMap
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.clock import Clock, ClockType
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from std_srvs.srv import SetBool, Trigger
    from visualization_msgs.msg import Marker

    from neural_mapping_interfaces.srv import LoadMap, QueryField, RenderView, SaveMap
    from neural_mapping.ros import convert_out as co

    latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

    class MapperNode(Node):
        def __init__(self, **kwargs) -> None:
            super().__init__("neural_mapper", **kwargs)
            self.ncfg, self.mcfg = declare_all(self)
            n = self.ncfg
            if n.pose_source == "tf":
                try:
                    import tf2_ros  # noqa: F401
                except ImportError:
                    raise StartupError(
                        "pose_source 'tf' needs tf2_ros, which is not importable here (it comes with a ROS 2 "
                        "install, not with the PyPI wheels); use pose_source:=pose (PoseStamped) or "
                        "pose_source:=odom (Odometry) instead") from None
            from neural_mapping.mapper import Mapper
            from neural_mapping.ros.sync import ApproxSync

            self._Mapper = Mapper
            def build():  # torch work in a thread that exits: its OpenMP workers go with it
                m = Mapper(self.mcfg)
                _load_kernels(self.mcfg, m.device)
                return m

            self.mapper = _in_exiting_thread(build)
            self.get_logger().info(
                f"resolved config: preset={n.preset} device={self.mapper.device} "
                f"node={dict((k, getattr(n, k)) for k in n.__dataclass_fields__)} "
                f"mapper={_flat(self.mcfg)}")
            self.T_body_camera = np.asarray(n.T_body_camera, dtype=np.float64).reshape(4, 4)
            #: input frames wider than this are subsampled before queuing (None: full resolution)
            self.input_max_width = auto_input_max_width(n.input_max_width, self.mapper.device)
            self.get_logger().info("input images: " + ("full resolution" if self.input_max_width is None else
                                   f"subsampled by an integer stride to <= {self.input_max_width} px wide"))
            self.queue: DropOldestQueue = DropOldestQueue(n.queue_size)
            self.sync = ApproxSync(slop_s=n.sync_slop_s, max_pose_gap_s=max(n.pose_max_gap_s, 1e-3),
                                   max_queue=max(4 * n.queue_size, 30))
            self._sync_lock = threading.Lock()
            self._mapper_swap = threading.RLock()  # held while self.mapper is replaced (load_map)
            self.counts: dict[str, int] = defaultdict(int)
            self._last_warn: dict[str, float] = {}
            self.last_error = ""
            self.paused = n.paused
            self.slice = (self.mcfg.occupancy.z_min, self.mcfg.occupancy.z_max, self.mcfg.occupancy.esdf_height)
            self.latest_K: np.ndarray | None = None
            self.latest_T_WC: np.ndarray | None = None
            self.latest_size: tuple[int, int] | None = None
            self.render_T_WC: np.ndarray | None = None
            self._mesh_at_steps = -1
            self._voxels_at_steps = -1
            self._step_times: list[tuple[float, int]] = []
            self.map_frame = n.map_frame

            # --- callback groups: inputs, products, services, status are independent
            self.cb_inputs = MutuallyExclusiveCallbackGroup()
            self.cb_products = MutuallyExclusiveCallbackGroup()
            self.cb_services = MutuallyExclusiveCallbackGroup()
            self.cb_status = MutuallyExclusiveCallbackGroup()

            # --- inputs (sensor-data QoS), names remappable
            sd = qos_profile_sensor_data
            self._subscription(Image, "color/image", self._on_color, sd, callback_group=self.cb_inputs)
            self._subscription(Image, "depth/image", self._on_depth, sd, callback_group=self.cb_inputs)
            self._subscription(CameraInfo, "depth/camera_info", self._on_info, sd, callback_group=self.cb_inputs)
            if n.pose_source == "pose":
                self._subscription(PoseStamped, "pose", self._on_pose, sd, callback_group=self.cb_inputs)
            elif n.pose_source == "odom":
                self._subscription(Odometry, "odom", self._on_pose, sd, callback_group=self.cb_inputs)
            else:  # tf (tf2_ros importable: a real ROS install)
                import tf2_ros

                self.tf_buffer = tf2_ros.Buffer()
                self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
            self._subscription(PoseStamped, "~/render_pose", self._on_render_pose, 10,
                                     callback_group=self.cb_inputs)

            # --- products (reliable + transient local)
            self.pub_mesh = self._publisher(Marker, "~/mesh", latched)
            self.pub_occ = self._publisher(OccupancyGrid, "~/occupancy", latched)
            self.pub_voxels = self._publisher(PointCloud2, "~/occupied_voxels", latched)
            self.pub_esdf = self._publisher(PointCloud2, "~/esdf_slice", latched)
            self.pub_color = self._publisher(Image, "~/rendered/color", latched)
            self.pub_depth = self._publisher(Image, "~/rendered/depth", latched)
            self.pub_info = self._publisher(CameraInfo, "~/rendered/camera_info", latched)
            self.pub_status = self._publisher(DiagnosticArray, "~/status", 10)

            # --- services
            for srv_type, name, fn in [(QueryField, "query_field", self._srv_query),
                                       (RenderView, "render_view", self._srv_render),
                                       (SaveMap, "save_map", self._srv_save), (LoadMap, "load_map", self._srv_load),
                                       (Trigger, "reset", self._srv_reset), (SetBool, "pause", self._srv_pause),
                                       (GetMap, "get_map", self._srv_get_map)]:
                srv = self.create_service(srv_type, f"~/{name}", self._service(name, fn),
                                          callback_group=self.cb_services)
                if srv_type is QueryField:
                    self._take_queries_as_arrays(srv)

            # --- timers, one per product at its own rate
            # timers schedule computation, so they run on the steady clock: with use_sim_time they keep
            # going when the bag pauses or ends; message stamps still come from the node's (sim) clock
            self._steady = Clock(clock_type=ClockType.STEADY_TIME)
            self._timer_fns = {  # rate parameter -> product computed by the runner
                "mesh_rate_hz": self._publish_mesh,
                "occupancy_rate_hz": self._publish_occupancy,
                "voxels_rate_hz": self._publish_voxels,
                "esdf_rate_hz": self._publish_esdf,
                "render_rate_hz": self._publish_render,
            }
            self._runner = self.create_timer(0.05, self._run_products, callback_group=self.cb_products, clock=self._steady)
            self._product_timers: dict[str, object] = {}
            self._products_next_allowed = 0.0  # monotonic time before which no product starts (duty budget)
            self._due: dict[str, float] = {}  # product -> monotonic time it became due
            self._product_seconds: dict[str, float] = {}  # product -> seconds of its last computation
            self._snap = None  # private copy of the mapper the products are computed from
            self._snap_key = None
            self._map_gen = 0  # incremented by reset and load_map: a new map lineage
            self._mesh_extractor = None  # MeshExtractor of the products' copy of the map (keeps its tile cache)
            for name in RATE_PARAMS:
                self._set_timer(name, getattr(n, name))
            self.add_on_set_parameters_callback(self._on_set_parameters)

            # --- training thread
            self._stop = threading.Event()
            self._users = 0  # products/services waiting for or using the mapper
            self._users_lock = threading.Lock()
            self._idle = threading.Event()  # set by the trainer while paused and not stepping
            self._jobs: queue_mod.SimpleQueue = queue_mod.SimpleQueue()  # (fn, Future) run by the trainer
            self._job_ready = threading.Event()
            self._trainer = threading.Thread(target=self._train_loop, name="neural_mapper_train", daemon=True)
            self._trainer.start()

        # ------------------------------------------------------------------ helpers
        def _warn(self, kind: str, msg: str) -> None:
            now = time.monotonic()
            if now - self._last_warn.get(kind, -1e9) >= self.ncfg.warn_throttle_s:
                self._last_warn[kind] = now
                self.get_logger().warning(f"{msg} (counted as {kind}; further ones throttled)")

        def _drop(self, kind: str, msg: str) -> None:
            self.counts[kind] += 1
            self._warn(kind, msg)

        def _now_ns(self) -> int:
            return self.get_clock().now().nanoseconds

        def _set_timer(self, name: str, rate_hz: float) -> None:
            old = self._product_timers.pop(name, None)
            if old is not None:
                old.cancel()
                self.destroy_timer(old)
            if rate_hz > 0:
                # rate timers are cheap (status, or marking a product due) and never wait for the runner
                cb = self._status_tick if name == "status_rate_hz" else self._guard(name)
                self._product_timers[name] = self.create_timer(1.0 / rate_hz, cb, callback_group=self.cb_status,
                                                               clock=self._steady)

        def _guard(self, name):
            """Timer callback of product ``name``: mark it due; the product runner computes it."""
            def run():
                self._due.setdefault(name, time.monotonic())
            return run

        def _run_products(self) -> None:
            """Compute the product due the longest, within the duty budget (fair: oldest due first).

            Products share ``product_duty_max``: after a product took d seconds, the next one
            starts no earlier than d * (1/duty - 1) later, so training keeps most of the time.
            """
            now = time.monotonic()
            if now < self._products_next_allowed or not self._due or not self._has_map():
                return
            if self.mapper.stats.steps < self.ncfg.products_min_steps:
                return
            name = min(self._due, key=self._due.get)
            self._due.pop(name, None)
            fn = self._timer_fns[name]
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a failing product must not stop the node
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: the publishers are gone
                self.last_error = f"{name}: {type(e).__name__}: {e}"
                self._warn(f"error_{name}", f"publishing for {name} failed: {e}\n{traceback.format_exc()}")
            finally:
                end = time.monotonic()
                self._product_seconds[name.removesuffix("_rate_hz")] = end - now
                self._products_next_allowed = end + (end - now) * (1.0 / self.ncfg.product_duty_max - 1.0)

        def _status_tick(self) -> None:
            try:
                self._publish_status()
            except Exception as e:  # noqa: BLE001
                self._warn("error_status", f"publishing status failed: {e}")

        @contextlib.contextmanager
        def _mapper_user(self):
            """Mark a product/service as waiting for the mapper: the trainer yields between steps."""
            with self._users_lock:
                self._users += 1
            try:
                yield
            finally:
                with self._users_lock:
                    self._users -= 1

        def _on_trainer(self, fn):
            """fn() run on the training thread; returns its result or raises what it raised.

            Torch's OpenMP worker threads belong to the thread that starts a parallel region, and
            with ``OMP_WAIT_POLICY=ACTIVE`` (set above) a thread's workers keep spinning after its
            last region: measured in one process on 2 cores, a 100 k query with gradients took 112 ms
            in a second thread against 71 ms in the thread whose team was warm. The trainer runs the
            job between two steps instead, with its own workers. Runs inline when called from the
            trainer or once the trainer has stopped.
            """
            if threading.current_thread() is self._trainer or not self._trainer.is_alive():
                return fn()
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._jobs.put((fn, fut))
            self._job_ready.set()
            self.queue.interrupt()  # the trainer may be waiting for a frame
            while True:
                try:
                    return fut.result(timeout=0.5)
                except concurrent.futures.TimeoutError:
                    if not self._trainer.is_alive() and fut.cancel():  # stopped before taking it
                        return fn()

        def _run_jobs(self) -> bool:
            """Run the jobs other threads handed to the trainer (see _on_trainer); True if any ran."""
            self._job_ready.clear()
            ran = False
            while True:
                try:
                    fn, fut = self._jobs.get_nowait()
                except queue_mod.Empty:
                    return ran
                ran = True
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
                        fut.set_exception(e)

        # Publishers and subscriptions without rclpy's default QoS-event handlers (they log incompatible
        # QoS). Each handler is a waitable that the multi-threaded executor adds, in Python, to the wait
        # set it rebuilds on every wake-up (~150 a second at 30 Hz input): with them the executor's
        # main thread took 0.14 CPU-s/s and, once the spinning OpenMP worker of the main thread was
        # gone, 0.56 and the node lost half its input; without them 0.04-0.05 and it keeps up
        # (RESULTS.md). The other side of a QoS mismatch (RViz, ros2 topic echo) still reports it.
        def _subscription(self, *args, **kwargs):
            from rclpy.event_handler import SubscriptionEventCallbacks

            return self.create_subscription(
                *args, event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False), **kwargs)

        def _publisher(self, *args, **kwargs):
            from rclpy.event_handler import PublisherEventCallbacks

            return self.create_publisher(
                *args, event_callbacks=PublisherEventCallbacks(use_default_callbacks=False), **kwargs)

        def _has_map(self) -> bool:
            m = self.mapper
            return m.stats.frames_added > 0 and m.bounds() is not None

        # ------------------------------------------------------------------ inputs
        def _on_color(self, msg) -> None:
            self._feed("color", msg)

        def _on_depth(self, msg) -> None:
            self._feed("depth", msg)

        def _on_info(self, msg) -> None:
            self._feed("info", msg)

        def _on_pose(self, msg) -> None:
            self._feed("pose", msg)

        def _feed(self, stream: str, msg) -> None:
            """Convert one message, push it into the synchroniser and queue every frame it completes."""
            from neural_mapping.ros import convert

            try:
                stamp_ns = convert.stamp_to_ns(msg.header.stamp)
                if stream == "color":
                    data = convert.image_to_rgb(msg)
                elif stream == "depth":
                    data = convert.image_to_depth_m(msg)
                elif stream == "info":
                    data = (convert.camera_info_to_K(msg), convert.camera_info_size(msg))
                else:
                    data = convert.pose_msg_to_T(msg) @ self.T_body_camera
            except (ValueError, TypeError, AttributeError) as e:
                self._drop("dropped_malformed", f"dropped a malformed {stream} message: {e}")
                return
            if stream == "depth" and self.ncfg.pose_source == "tf":
                self._feed_tf_pose(msg, stamp_ns)
            with self._sync_lock:
                sets = getattr(self.sync, f"add_{stream}")(stamp_ns, data)
            for s in sets:
                try:
                    frame = frame_from_synced(s, self.input_max_width)
                except ValueError as e:
                    self._drop("dropped_malformed", f"dropped an RGB-D set: {e}")
                    continue
                self._enqueue(frame)

        def _feed_tf_pose(self, depth_msg, stamp_ns: int) -> None:
            """pose_source 'tf': T_map_camera at the depth stamp from the TF tree (needs tf2_ros)."""
            import tf2_ros
            from rclpy.duration import Duration
            from rclpy.time import Time

            from neural_mapping.ros import convert

            camera = self.ncfg.camera_frame or depth_msg.header.frame_id
            try:
                tf = self.tf_buffer.lookup_transform(self.map_frame, camera, Time(nanoseconds=stamp_ns),
                                                     timeout=Duration(seconds=0.05))
                T = convert.pose_msg_to_T(tf) @ self.T_body_camera
            except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException) as e:
                self._drop("dropped_no_tf", f"no transform {self.map_frame} <- {camera} at the depth stamp: {e}")
                return
            except ValueError as e:
                self._drop("dropped_malformed", f"dropped a malformed transform: {e}")
                return
            with self._sync_lock:
                sets = self.sync.add_pose(stamp_ns, T)
            for s in sets:
                try:
                    self._enqueue(frame_from_synced(s, self.input_max_width))
                except ValueError as e:
                    self._drop("dropped_malformed", f"dropped an RGB-D set: {e}")

        def _enqueue(self, frame) -> None:
            self.counts["frames_received"] += 1
            if self.queue.put(frame) is not None:
                self._drop("dropped_queue_full", "frame queue full: dropped the oldest frame (training is slower than input)")

        def _on_render_pose(self, msg) -> None:
            try:
                T = co.pose_to_T(msg.pose)
            except ValueError as e:
                self._drop("dropped_malformed", f"dropped a malformed render_pose: {e}")
                return
            if msg.header.frame_id and msg.header.frame_id != self.map_frame:
                self._drop("dropped_malformed", f"render_pose must be in {self.map_frame!r}, got {msg.header.frame_id!r}")
                return
            self.render_T_WC = T

        # ------------------------------------------------------------------ training
        def _train_loop(self) -> None:
            while not self._stop.is_set():
                try:
                    self._run_jobs()
                    self._train_once()
                except Exception as e:  # noqa: BLE001 - report, keep the node alive
                    self.last_error = f"training: {type(e).__name__}: {e}"
                    self._warn("error_training", f"training failed: {e}\n{traceback.format_exc()}")
                    time.sleep(0.5)

        def _train_once(self) -> None:
            from neural_mapping.frame import FrameError

            t_end = time.monotonic() + 2.0
            while self._users > 0 and time.monotonic() < t_end:  # let services/products take the mapper lock
                if not self._run_jobs():
                    self._job_ready.wait(0.002)

            frame = self.queue.get(timeout=0.0 if self._can_step() else 0.1)
            n_added = 0
            while frame is not None:
                if self.paused:
                    self.counts["dropped_paused"] += 1
                else:
                    with self._mapper_swap:
                        try:
                            self.mapper.add_frame(frame)
                        except (FrameError, ValueError) as e:
                            self._drop("dropped_malformed", f"mapper refused a frame: {e}")
                    self.latest_K, self.latest_T_WC = frame.K, frame.T_WC
                    self.latest_size = (frame.height, frame.width)
                    n_added += 1
                # at most frames_per_step frames between two steps, so fast input cannot starve training
                # (the bounded queue then drops the oldest frames, counted in ~/status)
                frame = self.queue.get_nowait() if (self.paused or n_added < self.ncfg.frames_per_step) else None
            if self.paused or not self._can_step():
                if self.paused:
                    self._idle.set()
                    self._job_ready.wait(0.02)
                return
            self._idle.clear()
            with self._mapper_swap:
                self.mapper.step(1)
                steps = self.mapper.stats.steps
            now = time.monotonic()
            self._step_times.append((now, steps))
            while self._step_times and now - self._step_times[0][0] > 5.0:
                self._step_times.pop(0)

        def _can_step(self) -> bool:
            return not self.paused and self.mapper.stats.frames_added > 0

        # ------------------------------------------------------------------ products
        def _snapshot(self):
            """A private copy of the mapper for computing products (cached while the map is unchanged).

            Products can take seconds (a mesh); computing them on a copy keeps the live mapper's
            lock free, so training and services go on meanwhile. The lock is held while the weights
            (``state_dict``) and the coverage are copied (~10-30 ms at the cpu preset). While the map
            keeps its lineage (same mapper, no reset or load since) the copy is one object whose
            modules ``Mapper.load_state_dict`` reuses (3-19 ms; a new Mapper costs ~0.15-0.25 s at
            the cpu preset), and the mesh extractor kept on the copy keeps its tile cache. The
            coverage is copied once, whole, with its update stamps, so the extractor sees which
            blocks new frames touched.
            """
            import copy

            m = self.mapper
            key = (id(m), self._map_gen, m.stats.steps, m.stats.frames_added)
            if self._snap is not None and self._snap_key == key:
                return self._snap
            with self._mapper_user(), self._mapper_swap, m.lock:
                key = (id(m), self._map_gen, m.stats.steps, m.stats.frames_added)
                sd = m.state_dict(include_coverage=False)  # weights cloned, bounds and counters copied
                coverage = copy.deepcopy(m.coverage)  # with its per-block update stamps
            snap = self._snap
            if snap is not None and self._snap_key is not None and self._snap_key[:2] == key[:2]:
                snap.load_state_dict(sd, coverage=coverage)  # same config: modules reused
            else:
                snap = self._Mapper.from_state_dict(sd, device=m.device, coverage=coverage)
            self._snap, self._snap_key = snap, key
            return snap

        def _new_lineage(self) -> None:
            """After reset or load_map (caller holds _mapper_swap): products start from the new map."""
            self._mesh_at_steps = self._voxels_at_steps = -1
            self._snap = None
            self._mesh_extractor = None
            self._map_gen += 1

        def _publish_mesh(self) -> None:
            """Mesh the products' copy of the map with one MeshExtractor per copy (map lineage), so
            ``extract(full=False)`` recomputes only the tiles whose coverage or field changed.

            The copy is refreshed in place (``_snapshot``) and is only used by products (one at a
            time), so the extractor meshes it without a copy of its own (snapshot=False) and without
            holding the live mapper's lock.
            """
            from neural_mapping.products import MeshExtractor

            ex = self._mesh_extractor
            pending = ex is not None and ex.stats.tiles_pending > 0  # a budgeted update left tiles for later
            if self.mapper.stats.steps == self._mesh_at_steps and not pending:
                return
            gen = self._map_gen
            snap = self._snapshot()
            ex = self._mesh_extractor
            if ex is None or ex.mapper is not snap:
                ex = self._mesh_extractor = MeshExtractor(snap, snapshot=False)
            mesh = ex.extract(full=False, budget_s=self.ncfg.mesh_budget_s or None)
            if gen != self._map_gen:
                return  # reset or loaded meanwhile: this mesh is of a map that is gone
            self.pub_mesh.publish(co.mesh_to_marker_cdr(mesh, self.map_frame, self._now_ns()))  # serialized bytes
            self._mesh_at_steps = snap.stats.steps

        def _occupancy_msg(self, mapper):
            from neural_mapping.products import occupancy_slice_2d

            z_min, z_max, _ = self.slice
            sl = occupancy_slice_2d(mapper, z_min, z_max, mapper.cfg.occupancy.resolution_m)
            return co.occupancy_to_msg(sl, self.map_frame, self._now_ns(), z_m=z_min)

        def _publish_occupancy(self) -> None:
            self.pub_occ.publish(self._occupancy_msg(self._snapshot()))

        def _publish_voxels(self) -> None:
            from neural_mapping.products import occupancy_grid_3d

            if self.mapper.stats.steps == self._voxels_at_steps:
                return
            snap = self._snapshot()
            grid = occupancy_grid_3d(snap)
            self.pub_voxels.publish(co.points_to_cloud(_occupied_centres(grid), self.map_frame, self._now_ns()))
            self._voxels_at_steps = snap.stats.steps

        def _publish_esdf(self) -> None:
            from neural_mapping.products import esdf_slice

            snap = self._snapshot()
            _, _, z = self.slice
            es = esdf_slice(snap, z, snap.cfg.occupancy.resolution_m)
            pts, dist = _esdf_points(es, z)
            self.pub_esdf.publish(co.points_to_cloud(pts, self.map_frame, self._now_ns(), dist, "distance"))

        def _render_camera(self):
            n = self.ncfg
            H, W = n.render_height, n.render_width
            T = self.render_T_WC if self.render_T_WC is not None else self.latest_T_WC
            if T is None:
                return None
            if self.latest_K is not None and self.latest_size is not None:
                h0, w0 = self.latest_size
                K = self.latest_K.copy()
                K[0] *= W / w0
                K[1] *= H / h0
            else:
                f = 0.5 * W / np.tan(np.radians(30.0))
                K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
            return T, K, H, W

        def _publish_render(self) -> None:
            cam = self._render_camera() if self._has_map() else None
            if cam is None:
                return
            T, K, H, W = cam
            r = self._snapshot().render(T, K, H, W)
            stamp = self._now_ns()
            frame_id = "neural_mapper_render"
            self.pub_color.publish(co.rgb_to_image(r.color, frame_id, stamp))
            self.pub_depth.publish(co.depth_to_image(r.depth, frame_id, stamp))
            self.pub_info.publish(co.camera_info_msg(K, H, W, frame_id, stamp))

        def status(self) -> "co.NodeStatus":
            m = self.mapper
            st = m.stats
            rate = 0.0
            if len(self._step_times) >= 2:
                (t0, s0), (t1, s1) = self._step_times[0], self._step_times[-1]
                rate = (s1 - s0) / max(t1 - t0, 1e-6)
            if self.last_error and self.last_error.startswith("training"):
                state = "error: " + self.last_error
            elif self.paused:
                state = "paused"
            elif st.frames_added == 0:
                state = "waiting for frames"
            else:
                state = "mapping"
            c = self.counts
            return co.NodeStatus(
                device=str(m.device), state=state, frames_received=c["frames_received"],
                frames_added=int(st.frames_added), frames_rejected=int(st.frames_rejected),
                dropped_queue_full=self.queue.dropped, dropped_malformed=c["dropped_malformed"],
                dropped_no_pose=_sync_count(self.sync, "no_pose") + c["dropped_no_tf"],
                dropped_unsynced=_sync_count(self.sync, "unsynced"), dropped_paused=c["dropped_paused"],
                queue_length=len(self.queue), keyframes=int(st.keyframes), steps=int(st.steps), steps_per_s=rate,
                loss=float(st.last_loss if st.last_loss is not None else float("nan")),
                memory_mb=_rss_mb(), gpu_memory_mb=_gpu_mb(),
                products_s=" ".join(f"{k}={v:.3g}" for k, v in sorted(self._product_seconds.items())),
                last_error=self.last_error)

        def _publish_status(self) -> None:
            self.pub_status.publish(co.status_to_diagnostics(self.status(), "neural_mapper", self.get_fully_qualified_name(),
                                                             self._now_ns()))

        # ------------------------------------------------------------------ services
        def _service(self, name, fn):
            """Service callback: the trainer yields while it runs; an unexpected error is a failed response."""
            def run(req, resp):
                try:
                    with self._mapper_user():
                        return fn(req, resp)
                except Exception as e:  # noqa: BLE001 - answer, do not crash the node
                    self.get_logger().error(f"{name} failed: {e}\n{traceback.format_exc()}")
                    if hasattr(resp, "success"):
                        resp.success = False
                        resp.message = f"{name} failed: {type(e).__name__}: {e}"
                    return resp
            return run

        def _take_queries_as_arrays(self, srv) -> None:
            """Take query_field requests and send its gradients as numpy arrays (see ros/fast_srv.py);
            the wire type is unchanged."""
            from types import SimpleNamespace

            from neural_mapping.ros.fast_srv import array_request_type, array_response_type

            req, resp = array_request_type(srv.srv_type.Request), array_response_type(srv.srv_type.Response)
            for fast, what in ((req, "requests (points)"), (resp, "responses (gradients)")):
                if fast is None:
                    self.get_logger().warning(f"query_field: the array conversion of {what} failed its check; "
                                              "converting one message per point (slower for large queries)")
            # what the executor takes requests with and makes responses of
            srv.srv_type = SimpleNamespace(Request=req or srv.srv_type.Request, Response=resp or srv.srv_type.Response)

        def _srv_query(self, req, resp):
            from neural_mapping.ros.fast_srv import QueryRequestArrays

            arrays = isinstance(req, QueryRequestArrays)  # taken by ros/fast_srv.py
            if arrays and req.error is not None:
                resp.success = False
                resp.message = f"the request could not be read: {req.error}"
                return resp
            n = len(req.points_xyz) if arrays else len(req.points)
            resp.success = False
            if n > self.ncfg.max_query_points:
                resp.message = f"{n} points is more than max_query_points ({self.ncfg.max_query_points})"
                return resp
            if not self._has_map():
                resp.message = "the map is empty: no frames have been integrated yet"
                return resp
            t0 = time.perf_counter()
            pts = req.points_xyz if arrays else _points_array(req.points)
            if not np.all(np.isfinite(pts)):
                resp.message = "points contain NaN or inf"
                return resp
            t1 = time.perf_counter()
            q = self._on_trainer(lambda: self.mapper.query(pts, want_gradient=bool(req.want_gradient)))
            t2 = time.perf_counter()
            resp.sdf = co.float32_array(q.sdf)
            resp.occupancy = co.float32_array(q.occupancy)
            if req.want_gradient and q.gradient is not None:
                if hasattr(resp, "gradients_xyz"):  # sent without a Vector3 object each (ros/fast_srv.py)
                    resp.gradients_xyz = q.gradient
                else:
                    resp.gradients = co.vectors_msgs(q.gradient)
            resp.success = True
            resp.message = (f"{n} points{' (taken as arrays)' if arrays else ''}: convert {1e3 * (t1 - t0):.0f} ms, query (incl. waiting for the running "
                            f"training step) {1e3 * (t2 - t1):.0f} ms, pack {1e3 * (time.perf_counter() - t2):.0f} ms")
            return resp

        def _srv_render(self, req, resp):
            resp.success = False
            ci = req.camera_info
            H, W = int(ci.height), int(ci.width)
            K = np.asarray(ci.k, dtype=np.float64).reshape(3, 3)
            if not (0 < H <= 4096 and 0 < W <= 4096):
                resp.message = f"camera_info size {W}x{H} must be within 1..4096"
                return resp
            if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0):
                resp.message = "camera_info.k must hold finite, positive focal lengths"
                return resp
            try:
                T = co.pose_to_T(req.pose)
            except ValueError as e:
                resp.message = f"pose: {e}"
                return resp
            if not self._has_map():
                resp.message = "the map is empty: no frames have been integrated yet"
                return resp
            r = self._on_trainer(lambda: self.mapper.render(T, K, H, W))
            stamp = self._now_ns()
            frame_id = ci.header.frame_id or "neural_mapper_render"
            resp.color = co.rgb_to_image(r.color, frame_id, stamp)
            resp.depth = co.depth_to_image(r.depth, frame_id, stamp)
            resp.success = True
            resp.message = f"rendered {W}x{H}"
            return resp

        def _map_path(self, req, resp):
            """The file a save/load request names inside map_dir, or None with resp refused."""
            resp.success = False
            try:
                return resolve_in_dir(self.ncfg.map_dir, req.name)
            except ValueError as e:
                resp.message = f"refused: {e}"
                return None

        def _srv_save(self, req, resp):
            from neural_mapping.mapfile import save_map

            path = self._map_path(req, resp)
            if path is None:
                return resp
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with self._mapper_swap:
                    save_map(self.mapper, path)
            except Exception as e:  # noqa: BLE001 - reported to the caller
                resp.message = f"saving {path} failed: {type(e).__name__}: {e}"
                return resp
            resp.path = str(path)
            resp.success = True
            resp.message = f"saved {path}"
            self.get_logger().info(resp.message)
            return resp

        def _srv_load(self, req, resp):
            from neural_mapping.mapfile import load_map

            path = self._map_path(req, resp)
            if path is None:
                return resp
            if not path.is_file():
                resp.message = f"{path}: no such map file"
                return resp
            try:
                mapper = load_map(path, device=self.mcfg.device)
            except Exception as e:  # noqa: BLE001 - reported to the caller; the current map is kept
                resp.message = f"loading {path} failed: {type(e).__name__}: {e}"
                return resp
            with self._mapper_swap:
                self.mapper = mapper
                self._new_lineage()
            resp.success = True
            resp.message = f"loaded {path}"
            self.get_logger().info(resp.message)
            return resp

        def _srv_reset(self, req, resp):
            with self._mapper_swap:
                self.queue.clear()
                self.mapper.reset()
                self._new_lineage()
                self._step_times.clear()
                self.last_error = ""
            self.pub_mesh.publish(co.mesh_to_marker(co._EmptyMesh(), self.map_frame, self._now_ns()))
            resp.success = True
            resp.message = "map reset"
            return resp

        def _srv_pause(self, req, resp):
            from rclpy.parameter import Parameter

            res = self.set_parameters([Parameter("paused", Parameter.Type.BOOL, bool(req.data))])[0]
            resp.success = bool(res.successful)
            resp.message = ("paused" if req.data else "resumed") if res.successful else res.reason
            if res.successful and req.data:
                # answer once no training step is running, so the map stays as it is now
                with self._users_lock:
                    self._users -= 1  # this call must not hold the trainer back
                try:
                    if not self._idle.wait(timeout=10.0):
                        resp.message = "paused (the running training step did not finish within 10 s)"
                finally:
                    with self._users_lock:
                        self._users += 1
            return resp

        def _srv_get_map(self, req, resp):
            if self._has_map():
                resp.map = self._occupancy_msg(self.mapper)
            return resp

        # ------------------------------------------------------------------ parameters
        def _on_set_parameters(self, params):
            """Validate runtime changes with the config dataclasses (ranges, choices, z_max > z_min), then apply.

            Read-only parameters never get here (rclpy refuses them by their descriptor).
            """
            import dataclasses

            from neural_mapping.config import apply_overrides, iter_params
            from neural_mapping.ros.params import _normalise, node_param_names

            node_names = set(node_param_names())
            mapper_names = {name for name, _, _ in iter_params(type(self.mcfg))}
            node_upd = {p.name: _normalise(p.value, getattr(self.ncfg, p.name)) for p in params if p.name in node_names}
            mapper_upd = {p.name: p.value for p in params if p.name in mapper_names}
            try:
                ncfg = dataclasses.replace(self.ncfg, **node_upd)
                mcfg = apply_overrides(self.mcfg, mapper_upd)
            except (ConfigError, TypeError, ValueError) as e:
                return SetParametersResult(successful=False, reason=str(e))
            changed_rates = [k for k in RATE_PARAMS if getattr(ncfg, k) != getattr(self.ncfg, k)]
            self.ncfg, self.mcfg = ncfg, mcfg
            o = mcfg.occupancy
            self.slice = (o.z_min, o.z_max, o.esdf_height)
            self.paused = ncfg.paused
            for name in changed_rates:
                self._set_timer(name, getattr(ncfg, name))
            return SetParametersResult(successful=True)

        def shutdown(self) -> None:
            for t in list(self._product_timers.values()) + [self._runner]:
                t.cancel()
            self._stop.set()
            self.queue.close()
            self._trainer.join(timeout=5.0)

    return MapperNode


def _in_exiting_thread(fn):
    """fn() computed in a new thread that then exits; returns its result or raises what it raised.

    OpenMP worker threads belong to the thread that started a parallel region, and with
    ``OMP_WAIT_POLICY=ACTIVE`` (set above) they spin until that thread starts its next region or
    exits. Torch work done once in the main thread (which then only runs the executor) kept one
    core spinning for the node's whole life (1.2 CPU-s/s paused, 0.3-0.5 without it). The workers
    of an exited thread are released.
    """
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run, name="neural_mapper_init")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _load_kernels(mcfg, device) -> None:
    """Load the compiled hash-grid kernel before the node subscribes to its inputs.

    Its first load after the kernel source changed compiles it (tens of seconds, both cores of a
    2-core machine busy); left to the first training step, that compile would run while input is
    arriving, and an executor starved of CPU loses best-effort messages. Unavailable: the
    pure-PyTorch path runs (and the encoding logs why once).
    """
    if mcfg.encoding.kind != "hashgrid" or not mcfg.encoding.fast_cpu_kernel or str(device).startswith("cuda"):
        return
    try:
        from neural_mapping import hashgrid_ext

        hashgrid_ext.available()
    except Exception:  # noqa: BLE001 - optional speed-up; the encoding falls back by itself
        pass


def _flat(cfg) -> dict:
    from neural_mapping.config import to_flat

    return to_flat(cfg)


def _points_array(points) -> np.ndarray:
    """geometry_msgs/Point[] -> (N, 3) float64."""
    from itertools import chain
    from operator import attrgetter

    n = len(points)
    try:  # rclpy messages keep the values in slots _x, _y, _z: reading them skips the properties (2x faster)
        flat = chain.from_iterable(map(attrgetter("_x", "_y", "_z"), points))
        return np.fromiter(flat, dtype=np.float64, count=3 * n).reshape(n, 3)
    except AttributeError:
        pass
    return np.fromiter((c for p in points for c in (p.x, p.y, p.z)), dtype=np.float64, count=3 * n).reshape(n, 3)


def _occupied_centres(grid) -> np.ndarray:
    """Centres (N, 3) of the occupied voxels (value 100) of an OccupancyGrid3D."""
    occ = np.asarray(grid.data).reshape(-1) >= 100
    if not occ.any():
        return np.zeros((0, 3))
    return grid.centers()[occ]


def _esdf_points(es, z: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) cell centres at height z and (N,) distances of the known cells of an EsdfSlice."""
    d = np.asarray(es.distance, dtype=np.float64)
    H, W = d.shape
    jj, ii = np.mgrid[0:H, 0:W]
    x = es.origin_xy[0] + (ii + 0.5) * es.resolution
    y = es.origin_xy[1] + (jj + 0.5) * es.resolution
    keep = np.isfinite(d)
    pts = np.stack([x[keep], y[keep], np.full(int(keep.sum()), z)], axis=1)
    return pts, d[keep]


def _sync_count(sync, kind: str) -> int:
    st = sync.stats
    if kind == "no_pose":
        return int(st.dropped_no_pose)
    return int(st.dropped_color + st.dropped_depth + st.dropped_overflow)


def resize_nearest(img: np.ndarray, H: int, W: int) -> np.ndarray:
    """Nearest-neighbour resize of (h, w, ...) to (H, W, ...) by pixel-centre sampling."""
    h, w = img.shape[:2]
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return np.ascontiguousarray(img[rows][:, cols])


def input_stride(width: int, max_width: int | None) -> int:
    """Smallest integer stride that makes an image ``width`` px wide at most ``max_width`` px (None: 1)."""
    if not max_width or max_width <= 0 or width <= max_width:
        return 1
    return -(-int(width) // int(max_width))


def auto_input_max_width(setting: int, device) -> int | None:
    """The node's ``input_max_width`` resolved: None = full resolution; 0 (auto) is 320 on CPU."""
    if setting < 0:
        return None
    if setting == 0:
        return 320 if str(getattr(device, "type", device)) == "cpu" else None
    return int(setting)


def frame_from_synced(s, max_width: int | None = None) -> "Frame":
    """SyncedSet of converted arrays (color (h,w,3) uint8, depth (H,W) m, info (K, (w,h)), T_WC) -> Frame.

    Depth's intrinsics are used; a colour image of another size is resized to depth.
    ``max_width``: depth wider than this is subsampled by the smallest integer stride s that
    brings it within (every s-th pixel from the first, the intrinsics scaled by 1/s, so each
    kept pixel keeps its ray) and colour is sampled at the kept depth pixels.
    ValueError when the camera_info describes another size than the depth image.
    """
    from neural_mapping.frame import Frame, FrameError

    rgb, depth = s.color, s.depth
    K, (w_info, h_info) = s.info
    H, W = depth.shape
    if (w_info, h_info) != (0, 0) and (w_info, h_info) != (W, H):
        raise ValueError(f"depth camera_info is for {w_info}x{h_info} but the depth image is {W}x{H}")
    st = input_stride(W, max_width)
    if st > 1:
        depth = np.ascontiguousarray(depth[::st, ::st])
        K = np.asarray(K, dtype=np.float64).copy()
        K[:2] /= st  # pixel j*st of the full image is pixel j here: fx, fy, cx, cy (and skew) scale by 1/st
        h, w = rgb.shape[:2]
        Hs, Ws = depth.shape
        if (h, w) == (H, W):
            rgb = np.ascontiguousarray(rgb[::st, ::st])
        else:  # colour at the centres of the kept depth pixels
            rows = np.minimum(((np.arange(Hs) * st + 0.5) * h / H).astype(np.int64), h - 1)
            cols = np.minimum(((np.arange(Ws) * st + 0.5) * w / W).astype(np.int64), w - 1)
            rgb = np.ascontiguousarray(rgb[rows][:, cols])
    elif rgb.shape[:2] != (H, W):
        rgb = resize_nearest(rgb, H, W)
    try:
        return Frame(rgb=rgb, depth_m=depth, K=K, T_WC=s.T_WC, stamp_ns=int(s.stamp_ns))
    except FrameError as e:
        raise ValueError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    code = 0
    try:
        node = _make_node_class()()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        node.get_logger().info("neural_mapper ready")
        try:
            executor.spin()
        finally:
            node.shutdown()
            executor.shutdown(timeout_sec=5.0)
    except (StartupError, ConfigError, InvalidParameterValueException, InvalidParameterTypeException) as e:
        print(f"mapper_node: error: {e}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
