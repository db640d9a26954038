"""The node's viewer.* parameters start the same viewer inside the ROS node (a real node process)."""

import socket
import time
import urllib.request

import pytest

pytest.importorskip("viser")
pytest.importorskip("rclpy")

from ros_harness import NodeProcess  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_node_serves_the_viewer_when_enabled(ros_env, tmp_path):
    port = free_port()
    node = NodeProcess({"viewer.enabled": True, "viewer.port": port, "viewer.allow_control": True},
                       ros_env, tmp_path / "node.log")
    try:
        page, t_end = None, time.monotonic() + 45
        while page is None and time.monotonic() < t_end and node.proc.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, f"no viewer on port {port}; node log:\n{node.log()}"
        assert "<title>Viser</title>" in page or "viser" in page.lower()
    finally:
        rc = node.stop()
    log = node.log()
    assert rc == 0, log
    assert f"viewer: http://127.0.0.1:{port}" in log
    assert "reachable from other machines" not in log  # bound to loopback by default
