"""Fleet over DDS, the robot's side: this robot's frozen submaps published on ``~/submaps`` (docs/fleet.md).

With ``submaps.enabled`` the node's map is a :class:`~neural_mapping.submaps.SubmapMap`. A timer
(:data:`POLL_S`, steady clock, a callback group of its own) looks for submaps of this robot that
froze since it last looked (a new submap, or a newer version of one published before) and
publishes each as one ``neural_mapping_interfaces/Submap`` whose ``data`` is exactly the bytes of
:func:`~neural_mapping.submaps.encode_submap`. Encoding runs on the timer's thread, never on the
trainer: a frozen submap's mapper is never changed again (a thaw builds a new one), so it is read
without holding the map's lock; a spilled one is read back from its file (the same bytes).

QoS (:data:`SUBMAP_QOS`): reliable, transient local, keep last :data:`SUBMAP_DEPTH` messages, so a
map server that starts (or restarts) after the robot published still gets every submap version
the robot published, up to that many messages.

A robot that finished its bag must publish the submaps it still trains: when no frame has arrived
for ``submaps_freeze_idle_s`` seconds, the active submaps are frozen (between two training steps)
and published; frames arriving later thaw them, and their next freeze publishes a newer version.
At shutdown the same is done once more, waiting up to :data:`SHUTDOWN_ACK_S` for subscribers to
acknowledge.
"""

from __future__ import annotations

import array
import time
import traceback

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from neural_mapping.ros import convert_out as co
from neural_mapping.submaps.codec import SubmapRecord, encode_state, read_record

#: messages a robot's submaps publisher keeps for late subscribers (every version of every submap,
#: up to this many; older ones are dropped from the history first)
SUBMAP_DEPTH = 1000
SUBMAP_QOS = QoSProfile(depth=SUBMAP_DEPTH, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
#: the robot node's topic (``~/submaps``) and what the map server discovers (``*/neural_mapper/submaps``)
SUBMAPS_SUFFIX = "/neural_mapper/submaps"
SUBMAP_TYPE = "neural_mapping_interfaces/msg/Submap"
#: how often the robot looks for newly frozen submaps (s)
POLL_S = 1.0
#: longest shutdown waits for subscribers to acknowledge the last submaps (s)
SHUTDOWN_ACK_S = 2.0


def submap_msg(data: bytes, frame_id: str, stamp_ns: int):
    """The Submap message of encoded bytes: the header fields read from the bytes' own header."""
    from neural_mapping_interfaces.msg import Submap

    rec, _ = read_record(data)
    msg = Submap(header=co.make_header(frame_id, stamp_ns), robot_id=rec.robot_id, id=rec.id,
                 cell_i=int(rec.key[0]), cell_j=int(rec.key[1]), version=int(rec.version),
                 size_m=float(rec.grid.get("size_m", 0.0)), overlap_m=float(rec.grid.get("overlap_m", 0.0)),
                 cell_lo=[float(x) for x in rec.cell_lo], cell_hi=[float(x) for x in rec.cell_hi],
                 origin=[float(x) for x in rec.origin_W], kind=rec.kind)
    if rec.bounds_lo is not None and rec.bounds_hi is not None:
        msg.has_bounds = True
        msg.bounds_lo = [float(x) for x in rec.bounds_lo]
        msg.bounds_hi = [float(x) for x in rec.bounds_hi]
    msg.data = array.array("B", data)  # one copy, no per-element check
    return msg


def msg_bytes(msg) -> bytes:
    """The encoded submap a Submap message carries."""
    d = msg.data
    return d.tobytes() if isinstance(d, array.array) else bytes(d)


def header_mismatch(msg, rec: SubmapRecord) -> str | None:
    """Why the message's fields disagree with the header of the bytes it carries (None when they agree)."""
    for name, got, want in [("robot_id", msg.robot_id, rec.robot_id), ("id", msg.id, rec.id),
                            ("version", int(msg.version), rec.version),
                            ("cell", (int(msg.cell_i), int(msg.cell_j)), tuple(rec.key))]:
        if got != want:
            return f"message {name} {got!r} but its data says {want!r}"
    return None


def submap_bytes(smap, sub) -> bytes:
    """encode_submap bytes of a frozen submap: from its (never changed) mapper, or its spilled file."""
    m = sub.mapper  # read once: the cache may spill it meanwhile (the file is written before it is dropped)
    if m is not None:
        return encode_state(sub.record(), m.state_dict(include_keyframes=False))
    return smap.cache.file_of(sub.name, sub.version).read_bytes()


class SubmapPublisher:
    """``~/submaps`` of one robot node (see module doc)."""

    def __init__(self, node, callback_group) -> None:
        from neural_mapping_interfaces.msg import Submap

        self.node = node
        self.core = node.core
        self.pub = node.publisher(Submap, "~/submaps", SUBMAP_QOS)
        self.published: dict[str, int] = {}  # submap id -> version published (of the current map lineage)
        self.messages = 0
        self.bytes = 0
        self._lineage = self.core.lineage
        self._last_put = -1
        self._last_put_t = time.monotonic()
        self.timer = node.create_timer(POLL_S, self.tick, callback_group=callback_group, clock=node.steady)

    def tick(self) -> None:
        try:
            self.freeze_if_idle()
            self.publish_new()
        except Exception as e:  # noqa: BLE001 - a failed publication is retried at the next tick
            if not self.node.stopping:
                self.node.warn("error_submaps", f"publishing submaps failed: {e}\n{traceback.format_exc()}")

    def cancel(self) -> None:
        self.timer.cancel()

    def freeze_if_idle(self) -> bool:
        """Freeze the active submaps once no frame arrived for ``submaps_freeze_idle_s`` s (0: never)."""
        q, now = self.core.queue, time.monotonic()
        if q.put_count != self._last_put or len(q) > 0:
            self._last_put, self._last_put_t = q.put_count, now
            return False
        idle_s = self.node.ncfg.submaps_freeze_idle_s
        m = self.core.mapper
        if idle_s <= 0 or now - self._last_put_t < idle_s or not getattr(m, "active_ids", list)():
            return False
        ids = m.active_ids()
        self.core.run(_freeze_all)  # between two training steps
        self.node.get_logger().info(f"no input for {now - self._last_put_t:.1f} s: froze submaps {ids} to publish them")
        return True

    def publish_new(self) -> int:
        """Publish every frozen submap of this robot newer than what was published; how many were."""
        m = self.core.mapper
        if not hasattr(m, "submaps"):  # a plain map (loaded with load_map): nothing to publish
            return 0
        if self.core.lineage != self._lineage:  # reset or another map loaded: its submaps start over
            self._lineage, self.published = self.core.lineage, {}
        n = 0
        for sub in m.submaps():
            if sub.robot_id != m.robot_id or not sub.frozen or self.published.get(sub.id, -1) >= sub.version:
                continue
            data = submap_bytes(m, sub)
            self.pub.publish(submap_msg(data, self.node.ncfg.map_frame, self.node.now_ns()))
            self.published[sub.id] = sub.version
            self.messages += 1
            self.bytes += len(data)
            n += 1
            self.node.get_logger().info(f"published submap {sub.id} v{sub.version} of robot {sub.robot_id!r} "
                                        f"({len(data) / 1e3:.0f} kB)")
        return n

    def finish(self) -> None:
        """At shutdown (trainer stopped): freeze and publish what is left; wait a little for acknowledgements."""
        self.cancel()
        m = self.core.mapper
        if not hasattr(m, "freeze_all"):
            return
        m.freeze_all()
        if self.publish_new() and self.pub.get_subscription_count() > 0:
            self.pub.wait_for_all_acked(Duration(seconds=SHUTDOWN_ACK_S))


def _freeze_all(m) -> None:
    if hasattr(m, "freeze_all"):
        m.freeze_all()
