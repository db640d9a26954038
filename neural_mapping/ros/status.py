"""The node's status (DiagnosticArray): counters of the inputs, the core and the products.

Published on ``/diagnostics`` (where diagnostic_aggregator and rqt_robot_monitor look; status name
``<node name>: mapping``, hardware_id the torch device, as diagnostic_updater names them) and on
``~/status`` (the same message, for tools and tests that read the node's own topic).
"""

from __future__ import annotations

import os

from diagnostic_msgs.msg import DiagnosticArray

from neural_mapping.ros import convert_out as co


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


def gpu_mb() -> float:
    try:
        import torch

        return torch.cuda.memory_allocated() / 1e6 if torch.cuda.is_available() else 0.0
    except Exception:  # noqa: BLE001 - statistics only
        return 0.0


class Status:
    """Publisher and rate timer of ``~/status``."""

    def __init__(self, node) -> None:
        self.node = node
        self.pub = node.publisher(DiagnosticArray, "~/status", 10)
        self.pub_diagnostics = node.publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = None

    def set_rate(self, rate_hz: float, callback_group) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.node.destroy_timer(self.timer)
            self.timer = None
        if rate_hz > 0:
            self.timer = self.node.create_timer(1.0 / rate_hz, self._tick, callback_group=callback_group,
                                                clock=self.node.steady)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def status(self) -> co.NodeStatus:
        node = self.node
        core, inputs = node.core, node.inputs
        c = core.stats()
        st = core.mapper.stats
        return co.NodeStatus(
            device=str(core.mapper.device), state=c.state, frames_received=c.frames_received,
            frames_added=int(st.frames_added), frames_rejected=int(st.frames_rejected),
            dropped_queue_full=c.dropped_queue_full,
            dropped_malformed=inputs.counts["dropped_malformed"] + c.dropped_refused,
            dropped_no_pose=inputs.dropped_no_pose(), dropped_unsynced=inputs.dropped_unsynced(),
            dropped_paused=c.dropped_paused, queue_length=c.queue_length, keyframes=int(st.keyframes),
            steps=c.steps, steps_per_s=c.steps_per_s,
            loss=float(st.last_loss if st.last_loss is not None else float("nan")),
            memory_mb=rss_mb(), gpu_memory_mb=gpu_mb(), products_s=node.publishing.seconds_summary(),
            last_error=c.last_error or node.publishing.last_error, oom_retries=c.oom_retries,
            **{f"{k}_hz_achieved": v for k, v in node.publishing.achieved_hz().items()},
            input_counts=" ".join(f"{k}={v}" for k, v in sorted(inputs.received.items())),
            missing_estimated=inputs.missing_estimated())

    def _tick(self) -> None:
        try:
            st = self.status()
            msg = co.status_to_diagnostics(st, f"{self.node.get_name()}: mapping", f"neural_mapping {st.device}",
                                           self.node.now_ns())
            self.pub.publish(msg)
            self.pub_diagnostics.publish(msg)
        except Exception as e:  # noqa: BLE001
            self.node.warn("error_status", f"publishing status failed: {e}")
