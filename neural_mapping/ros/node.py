"""ROS 2 node `neural_mapper` (executable `mapper_node`): converts and schedules, no math.

Data flow:
  subscriptions (sensor-data QoS, ros/inputs.py) --convert (ros/convert.py)--> ApproxSync (ros/sync.py)
  --> Frame --> OnlineMapper (neural_mapping/online.py): bounded drop-oldest queue, trainer thread
  publish timers, each at its own rate (ros/publishing.py) --> products of the core's map copy
  (reliable + transient local, map_frame); services (ros/services.py, own callback group,
  MultiThreadedExecutor) answer while training runs; ~/status (ros/status.py).

Malformed messages are dropped with a throttled warning and counted in ~/status; the
node keeps mapping. All parameters come from ros/params.py (NodeConfig + MapperConfig).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading

# The trainer's OpenMP threads (torch and the hash-grid kernel) spin while they wait for work. With
# libgomp's default (spin briefly, then sleep) every parallel region of a training step had to wake
# sleeping threads on a 2-core machine busy with the executor and DDS: bench_ros received 39-57 of
# 300 sets at 30 Hz and trained 0.3-1.6 steps/s, against 295-300 sets and 4.6-5.5 steps/s with
# ACTIVE (same code, quiet machine). Set before torch loads libgomp; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks  # noqa: E402
from rclpy.node import Node  # noqa: E402

from neural_mapping.config import ConfigError, apply_overrides, iter_params, to_flat  # noqa: E402
from neural_mapping.online import OnlineMapper, WarnThrottle  # noqa: E402
from neural_mapping.ros.params import RATE_PARAMS, coerce_value, declare_all, node_param_names  # noqa: E402


#: how long shutdown waits for the trainer's running step before it warns (s)
SHUTDOWN_TRAINER_S = 1.5
_SHUTDOWN_LOCK = threading.Lock()


class StartupError(RuntimeError):
    """The node cannot start with these parameters (message says why and what to do)."""


class MapperNode(Node):
    """The mapper node: its constructor reads as the steps that build it."""

    def __init__(self, **kwargs) -> None:
        super().__init__("neural_mapper", **kwargs)
        self._stopping = False
        self._shut_down = False
        self.warn = WarnThrottle(lambda msg: self.get_logger().warning(msg), lambda: self.ncfg.warn_throttle_s)
        # timers schedule computation, so they run on the steady clock: with use_sim_time they keep
        # going when the bag pauses or ends; message stamps still come from the node's (sim) clock
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        # callback groups: inputs, the product runner, services and the cheap timers are independent
        self.cb_inputs = MutuallyExclusiveCallbackGroup()
        self.cb_products = MutuallyExclusiveCallbackGroup()  # the product runner: one product at a time
        self.cb_services = MutuallyExclusiveCallbackGroup()
        self.cb_timers = MutuallyExclusiveCallbackGroup()  # rate timers and status: cheap, never wait
        self._declare_parameters()
        self._build_core()
        self._create_inputs()
        self._create_publishers()
        self._create_services()
        self._create_timers()
        self._create_viewer()
        self.core.start()

    # ------------------------------------------------------------------ construction steps

    def _declare_parameters(self) -> None:
        """Every parameter from the config dataclasses (ros/params.py), validated; runtime changes checked."""
        self.ncfg, self.mcfg = declare_all(self)
        if self.ncfg.pose_source == "tf":
            try:
                import tf2_ros  # noqa: F401
            except ImportError:
                raise StartupError(
                    "pose_source 'tf' needs tf2_ros, which is not importable here (it comes with a ROS 2 "
                    "install, not with the PyPI wheels); use pose_source:=pose (PoseStamped) or "
                    "pose_source:=odom (Odometry) instead") from None
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _build_core(self) -> None:
        """The map (a Mapper, or a SubmapMap with submaps.enabled; built, kernels loaded, in a thread that
        exits) and the online core training it. A fleet robot's submaps.robot_id defaults to its namespace."""
        from neural_mapping.runner import new_map

        ns = self.get_namespace().strip("/")
        if self.mcfg.submaps.enabled and not self.mcfg.submaps.robot_id and ns:
            self.mcfg = apply_overrides(self.mcfg, {"submaps.robot_id": ns})

        def build():  # torch work in a thread that exits: its OpenMP workers go with it
            m = new_map(self.mcfg)
            _load_kernels(self.mcfg, m.device)
            return m

        mapper = _in_exiting_thread(build)
        n = self.ncfg
        self.get_logger().info(
            f"resolved config: preset={n.preset} device={mapper.device} "
            f"node={dataclasses.asdict(n)} mapper={to_flat(self.mcfg)}")
        self.core = OnlineMapper(mapper, queue_size=n.queue_size, frames_per_step=n.frames_per_step, paused=n.paused,
                                 on_warning=self.warn)

    def _create_inputs(self) -> None:
        from neural_mapping.ros.inputs import Inputs

        self.inputs = Inputs(self, self.cb_inputs)

    def _create_publishers(self) -> None:
        """Products (reliable + transient local) and ~/status."""
        from neural_mapping.ros.publishing import Publishing
        from neural_mapping.ros.status import Status

        self.publishing = Publishing(self)
        self.status_pub = Status(self)
        self.submap_pub = None
        if self.mcfg.submaps.enabled:  # fleet: frozen submaps on ~/submaps (ros/submap_pub.py)
            from neural_mapping.ros.submap_pub import SubmapPublisher

            self.submap_pub = SubmapPublisher(self, MutuallyExclusiveCallbackGroup())

    def _create_services(self) -> None:
        from neural_mapping.ros.services import Services

        self.service_handlers = Services(self, self.cb_services)

    def _create_timers(self) -> None:
        """On the steady clock: the product runner, one rate timer per product (marks it due) and ~/status's."""
        self.publishing.create_runner(self.cb_products)
        for name in RATE_PARAMS:
            self._set_rate(name, getattr(self.ncfg, name))

    def _create_viewer(self) -> None:
        """The web viewer on the core (viewer.* parameters; off by default): neural_mapping/viewer."""
        self.viewer = None
        if self.mcfg.viewer.enabled:
            from neural_mapping.viewer.server import Viewer

            self.viewer = Viewer(self.core, self.mcfg.viewer, logger=self.get_logger(),
                                 save_dir=os.path.expanduser(self.ncfg.map_dir)).start()

    def _set_rate(self, name: str, rate_hz: float) -> None:
        """(Re)start the timer of rate parameter ``name``; 0 Hz switches it off."""
        if name == "status_rate_hz":
            self.status_pub.set_rate(rate_hz, self.cb_timers)
        else:
            self.publishing.set_rate(name, rate_hz, self.cb_timers)

    # ------------------------------------------------------------------ pubs and subs

    # Publishers and subscriptions without rclpy's default QoS-event handlers (they log incompatible
    # QoS). Each handler is a waitable that the multi-threaded executor adds, in Python, to the wait
    # set it rebuilds on every wake-up (~150 a second at 30 Hz input): with them the executor's
    # main thread took 0.14 CPU-s/s and, once the spinning OpenMP worker of the main thread was
    # gone, 0.56 and the node lost half its input; without them 0.04-0.05 and it keeps up
    # (RESULTS.md). The other side of a QoS mismatch (RViz, ros2 topic echo) still reports it.
    def subscription(self, *args, **kwargs):
        return self.create_subscription(
            *args, event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False), **kwargs)

    def publisher(self, *args, **kwargs):
        return self.create_publisher(
            *args, event_callbacks=PublisherEventCallbacks(use_default_callbacks=False), **kwargs)

    # ------------------------------------------------------------------ shared by the parts

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def has_map(self) -> bool:
        m = self.core.mapper
        return m.stats.frames_added > 0 and m.bounds() is not None

    @property
    def stopping(self) -> bool:
        return self._stopping or not self.context.ok()

    def status(self):
        """The node's NodeStatus (what ~/status publishes)."""
        return self.status_pub.status()

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, params):
        """Validate runtime changes with the config dataclasses (ranges, choices, z_max > z_min), then apply.

        Read-only parameters never get here (rclpy refuses them by their descriptor).
        """
        node_names = set(node_param_names())
        mapper_names = {name for name, _, _ in iter_params(type(self.mcfg))}
        node_upd = {p.name: coerce_value(p.value, getattr(self.ncfg, p.name)) for p in params if p.name in node_names}
        mapper_upd = {p.name: p.value for p in params if p.name in mapper_names}
        try:
            ncfg = dataclasses.replace(self.ncfg, **node_upd)
            mcfg = apply_overrides(self.mcfg, mapper_upd)
        except (ConfigError, TypeError, ValueError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        changed_rates = [k for k in RATE_PARAMS if getattr(ncfg, k) != getattr(self.ncfg, k)]
        self.ncfg, self.mcfg = ncfg, mcfg
        self.core.set_paused(ncfg.paused)
        for name in changed_rates:
            self._set_rate(name, getattr(ncfg, name))
        return SetParametersResult(successful=True)

    def shutdown(self) -> None:
        """Stop the timers, a running render (between two bands) and the trainer (between two steps),
        then save the map if ``save_on_shutdown``. Idempotent: later calls return at once."""
        with _SHUTDOWN_LOCK:
            if self._shut_down:
                return
            self._shut_down = self._stopping = True
        self.publishing.cancel()
        self.status_pub.cancel()
        if getattr(self, "submap_pub", None) is not None:
            self.submap_pub.cancel()
        if getattr(self, "viewer", None) is not None:
            self.viewer.stop()
        if not self.core.stop(timeout=SHUTDOWN_TRAINER_S):
            self.get_logger().warning(f"the trainer did not stop within {SHUTDOWN_TRAINER_S} s; waiting for its step")
            self.core.stop(timeout=30.0)  # never leave it to die inside torch at interpreter exit
        if getattr(self, "submap_pub", None) is not None:  # what the robot still trained, for the fleet's map server
            try:
                self.submap_pub.finish()
            except Exception as e:  # noqa: BLE001 - shutdown goes on
                self.get_logger().error(f"publishing the last submaps at shutdown failed: {e}")
        if self.ncfg.save_on_shutdown:
            self.service_handlers.save_on_shutdown()


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


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT or SIGTERM; 0 after a clean stop, 1 when a callback raised out of the
    executor (then shut down the same way), 2 when it cannot start.

    The executor spins in a thread; the main thread waits for a signal (Python handlers that only
    set a flag, so a second Ctrl-C during shutdown is tolerated: no KeyboardInterrupt inside a
    join) and then shuts down in order: timers, a running render, the trainer between two steps,
    the map saved (``save_on_shutdown``), the executor, the node.
    """
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = _StopOnSignals()
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = spinner = None
    code = 0
    try:
        node = MapperNode()
        executor = MultiThreadedExecutor(num_threads=5)
        executor.add_node(node)
        spin_error: list = []
        spinner = threading.Thread(target=_spin, args=(executor, spin_error), name="neural_mapper_executor",
                                   daemon=True)
        spinner.start()
        node.get_logger().info("neural_mapper ready")
        while not stop.event.wait(0.5) and spinner.is_alive():
            pass
        if stop.signals:
            node.get_logger().info(f"{stop.signals[0]} received: shutting down")
        elif spin_error:  # a callback raised out of the executor: stop as after a signal, exit code 1
            node.get_logger().error(f"the executor stopped: {spin_error[0]!r}; shutting down")
            code = 1
    except (StartupError, ConfigError, InvalidParameterValueException, InvalidParameterTypeException) as e:
        print(f"mapper_node: error: {e}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            node.shutdown()
        if executor is not None:
            executor.shutdown(timeout_sec=0)
        if spinner is not None:
            spinner.join(timeout=2.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if argv is None:  # the process's entry point (mapper_node): skip the interpreter's finalisation
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End the process now: everything that needs an orderly stop (trainer, save, executor, DDS
    context) has stopped. Python's finalisation after that (module teardown of torch and the DDS
    libraries) took 2-3.5 s on a loaded 2-core machine, against shutdown's 2 s budget, and C++
    destructors of still-running library threads are where "terminate called" came from."""
    import logging

    logging.shutdown()
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _spin(executor, errors: list) -> None:
    try:
        executor.spin()
    except Exception as e:  # noqa: BLE001 - reported by main, which then shuts down
        errors.append(e)


class _StopOnSignals:
    """SIGINT and SIGTERM set ``event`` (recorded in ``signals``) instead of raising in the main thread."""

    def __init__(self) -> None:
        import signal

        self.event = threading.Event()
        self.signals: list[str] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        import signal

        self.signals.append(signal.Signals(signum).name)
        self.event.set()


if __name__ == "__main__":
    sys.exit(main())
