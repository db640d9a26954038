"""ROS 2 node ``map_server`` (executable ``map_server``): a fleet's submaps merged into one map, served.

Robots (``mapper_node`` with ``submaps.enabled``, each in its namespace) publish their frozen
submaps on ``<ns>/neural_mapper/submaps`` (ros/submap_pub.py). This node:

* finds those topics: every ``*/neural_mapper/submaps`` of type ``neural_mapping_interfaces/msg/Submap``
  in the graph, looked up every ``discovery_period_s`` (so robots may join at any time), or only
  ``<ns>/neural_mapper/submaps`` for each namespace of the ``robots`` parameter when it is set;
* subscribes reliable + transient local (ros/submap_pub.py's ``SUBMAP_QOS``), so it gets every
  submap published before it started, and merges each into one
  :class:`~neural_mapping.submaps.SubmapMap` (``merge``: the newest version of each robot's cell;
  cells seen by several robots are blended, not duplicated);
* serves the merged map with the robot node's own modules: ``~/mesh``, ``~/occupancy``,
  ``~/occupied_voxels``, ``~/esdf_slice`` (ros/publishing.py) and ``~/query_field``,
  ``~/render_view``, ``~/get_map`` (ros/services.py), through an
  :class:`~neural_mapping.online.OnlineMapper` that is given no frames (its thread runs the
  merges, queries and map copies one at a time);
* reports on ``~/status`` (DiagnosticArray: robots, topics, submaps held, messages received,
  merged, stale, malformed).

A malformed message (bytes that do not decode, fields that disagree with its bytes, another grid
or field kind) is dropped with a throttled warning and counted; the server keeps serving.
Parameters: the mapper node's (ros/params.py: the same config file gives the same grid and
products; ``products_min_steps`` does not apply) plus ``robots`` and ``discovery_period_s``.
"""

from __future__ import annotations

import os
import sys
import threading
from types import SimpleNamespace

# The server trains nothing: OpenMP threads that sleep when idle (the robot node spins them, node.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import ParameterDescriptor, ParameterType  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from neural_mapping.config import ConfigError, apply_overrides  # noqa: E402
from neural_mapping.online import OnlineMapper, WarnThrottle  # noqa: E402
from neural_mapping.ros import convert_out as co  # noqa: E402
from neural_mapping.ros.params import RATE_PARAMS, declare_all  # noqa: E402
from neural_mapping.ros.submap_pub import (SUBMAP_QOS, SUBMAP_TYPE, SUBMAPS_SUFFIX, header_mismatch,  # noqa: E402
                                           msg_bytes)

#: the services of the map server (the robot node's save/load/reset/pause make no sense for a merged map)
SERVICES = ("query_field", "render_view", "get_map")
#: why query_field/render_view are refused before any submap arrived
NO_SUBMAPS = "the map server holds no submap yet"


class MapServer(Node):
    """The fleet's map server (see module doc); its constructor reads as the steps that build it."""

    def __init__(self, **kwargs) -> None:
        super().__init__("map_server", **kwargs)
        self._stopping = False
        self.warn = WarnThrottle(lambda msg: self.get_logger().warning(msg), lambda: self.ncfg.warn_throttle_s)
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.cb_submaps = MutuallyExclusiveCallbackGroup()
        self.cb_products = MutuallyExclusiveCallbackGroup()
        self.cb_services = MutuallyExclusiveCallbackGroup()
        self.cb_timers = MutuallyExclusiveCallbackGroup()
        self.counts = {"received": 0, "merged": 0, "stale": 0, "malformed": 0}
        self.held: dict[tuple[str, str], int] = {}  # (robot id, submap id) -> version merged
        self.subs: dict[str, object] = {}  # topic -> subscription
        self._declare_parameters()
        self._build_core()
        self.inputs = SimpleNamespace(render_T_WC=None)  # no camera: the periodic render product has no view
        self._create_products()
        self._create_timers()
        self.core.start()
        self.discover()

    # ------------------------------------------------------------------ construction steps

    def _declare_parameters(self) -> None:
        """The mapper node's parameters (grid, products, limits) plus ``robots`` and ``discovery_period_s``."""
        self.ncfg, self.mcfg = declare_all(self)
        self.ncfg.products_min_steps = 0  # robots publish trained submaps: serve the first one
        self.robots = [r for r in self.declare_parameter(
            "robots", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
                type=ParameterType.PARAMETER_STRING_ARRAY, read_only=True,
                description="Namespaces of the robots to take submaps from (<ns>/neural_mapper/submaps); "
                            "empty: every */neural_mapper/submaps topic discovered")).value or [] if r]
        self.discovery_period_s = float(self.declare_parameter(
            "discovery_period_s", 2.0, ParameterDescriptor(
                type=ParameterType.PARAMETER_DOUBLE, read_only=True,
                description="How often the graph is searched for robots' submaps topics (s)")).value)
        if not self.discovery_period_s > 0:
            raise ConfigError(f"discovery_period_s must be > 0, got {self.discovery_period_s}")

    def _build_core(self) -> None:
        """An empty SubmapMap of the configured grid (built in a thread that exits, as the robot node's map)
        and the core that runs merges, queries and map copies on it."""
        from neural_mapping.ros.node import _in_exiting_thread
        from neural_mapping.submaps import SubmapMap

        cfg = apply_overrides(self.mcfg, {"submaps.enabled": True})
        smap = _in_exiting_thread(lambda: SubmapMap(cfg))
        self.get_logger().info(f"grid {smap.grid.as_dict()} in frame {self.ncfg.map_frame!r}, device {smap.device}")
        self.core = OnlineMapper(smap, queue_size=1, on_warning=self.warn)
        self.surface = _planner_surface(self.core)

    def _create_products(self) -> None:
        from neural_mapping.ros.publishing import Publishing
        from neural_mapping.ros.services import Services

        self.publishing = Publishing(self)
        self.service_handlers = Services(self, self.cb_services, names=SERVICES)
        self.pub_status = self.publisher(DiagnosticArray, "~/status", 10)

    def _create_timers(self) -> None:
        self.publishing.create_runner(self.cb_products)
        for name in RATE_PARAMS:
            rate = getattr(self.ncfg, name)
            if name == "status_rate_hz":
                if rate > 0:
                    self.create_timer(1.0 / rate, self._publish_status, callback_group=self.cb_timers,
                                      clock=self.steady)
            else:
                self.publishing.set_rate(name, rate, self.cb_timers)
        self.create_timer(self.discovery_period_s, self.discover, callback_group=self.cb_timers, clock=self.steady)

    # ------------------------------------------------------------------ what Publishing and Services use

    def subscription(self, *args, **kwargs):
        return self.create_subscription(
            *args, event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False), **kwargs)

    def publisher(self, *args, **kwargs):
        return self.create_publisher(
            *args, event_callbacks=PublisherEventCallbacks(use_default_callbacks=False), **kwargs)

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def has_map(self) -> bool:
        return self.core.mapper.bounds() is not None

    @property
    def stopping(self) -> bool:
        return self._stopping or not self.context.ok()

    # ------------------------------------------------------------------ submaps in

    def topics(self) -> list[str]:
        """The submaps topics to take: the ``robots`` parameter's, else every one in the graph now."""
        if self.robots:
            return [("/" + r.strip("/") if r.strip("/") else "") + SUBMAPS_SUFFIX for r in self.robots]
        return sorted(name for name, types in self.get_topic_names_and_types()
                      if (name.endswith(SUBMAPS_SUFFIX) or name == SUBMAPS_SUFFIX) and SUBMAP_TYPE in types)

    def discover(self) -> None:
        """Subscribe to every submaps topic not subscribed yet."""
        from neural_mapping_interfaces.msg import Submap

        if self.stopping:
            return
        for topic in self.topics():
            if topic not in self.subs:
                self.subs[topic] = self.subscription(Submap, topic, lambda msg, t=topic: self.on_submap(msg, t),
                                                     SUBMAP_QOS, callback_group=self.cb_submaps)
                self.get_logger().info(f"taking submaps from {topic}")

    def on_submap(self, msg, topic: str) -> None:
        """Merge one robot's submap (newest version wins); malformed ones dropped, warned and counted."""
        from neural_mapping.submaps.codec import SubmapCodecError, read_record

        self.counts["received"] += 1
        try:
            data = msg_bytes(msg)
            rec, _ = read_record(data)
            why = header_mismatch(msg, rec)
            if why:
                raise SubmapCodecError(why)
            merged = self.core.run(lambda m: m.merge(data))  # decoded and merged between other jobs
        except (SubmapCodecError, ValueError, KeyError, RuntimeError) as e:
            self.counts["malformed"] += 1
            self.warn("submaps_malformed", f"dropped a malformed submap message on {topic}: {e}")
            return
        if not merged:
            self.counts["stale"] += 1  # this version (or a newer one) of that robot's cell is held already
            return
        self.counts["merged"] += 1
        self.held[(rec.robot_id, rec.id)] = rec.version
        self.get_logger().info(f"merged submap {rec.id} v{rec.version} of robot {rec.robot_id!r} from {topic} "
                               f"({len(data) / 1e3:.0f} kB; {len(self.held)} held)")

    # ------------------------------------------------------------------ status

    def status_values(self) -> dict[str, str]:
        held = dict(self.held)
        return {"robots": ",".join(sorted({r for r, _ in held})), "topics": ",".join(sorted(self.subs)),
                "submaps": str(len(held)),
                "versions": " ".join(f"{r}/{i}@{v}" for (r, i), v in sorted(held.items())),
                **{f"messages_{k}": str(v) for k, v in self.counts.items()},
                "products_s": self.publishing.seconds_summary(), "last_error": self.publishing.last_error}

    def _publish_status(self) -> None:
        try:
            level = DiagnosticStatus.WARN if self.counts["malformed"] else DiagnosticStatus.OK
            st = DiagnosticStatus(level=level, name=f"{self.get_name()}: fleet map",
                                  message=f"{len(self.held)} submaps from {len({r for r, _ in self.held})} robots",
                                  hardware_id=f"neural_mapping {self.core.mapper.device}",
                                  values=[KeyValue(key=k, value=v) for k, v in self.status_values().items()])
            self.pub_status.publish(DiagnosticArray(header=co.make_header("", self.now_ns()), status=[st]))
        except Exception as e:  # noqa: BLE001
            self.warn("error_status", f"publishing status failed: {e}")

    def shutdown(self) -> None:
        self._stopping = True
        self.publishing.cancel()
        self.core.stop(timeout=30.0)


def _planner_surface(core):
    """query_field's and the ESDF's distances beyond the band, as the robot node has them
    (ros/planner_surface.py; a stand-in that has no surface where that module is absent)."""
    try:
        from neural_mapping.ros.planner_surface import PlannerSurface
    except ImportError:
        return SimpleNamespace(get=lambda: None, offer=lambda lineage, mesh: None)
    return PlannerSurface(core)


def main(argv: list[str] | None = None) -> int:
    """Run the map server until SIGINT or SIGTERM (0), 1 when a callback raised, 2 when it cannot start."""
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from neural_mapping.ros.node import _exit_now, _spin, _StopOnSignals

    stop = _StopOnSignals()
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = spinner = None
    code = 0
    try:
        node = MapServer()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        errors: list = []
        spinner = threading.Thread(target=_spin, args=(executor, errors), name="map_server_executor", daemon=True)
        spinner.start()
        node.get_logger().info("map_server ready")
        while not stop.event.wait(0.5) and spinner.is_alive():
            pass
        if errors:
            node.get_logger().error(f"the executor stopped: {errors[0]!r}; shutting down")
            code = 1
    except (ConfigError, InvalidParameterValueException, InvalidParameterTypeException) as e:
        print(f"map_server: error: {e}", file=sys.stderr)
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
    if argv is None:
        _exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
