"""The viewer's settings: the ``viewer.*`` ROS parameter group and the ``view`` command's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from neural_mapping.config import ConfigError, ConfigGroup, param

#: hosts that only this machine can reach
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ViewerConfig(ConfigGroup):
    """Web viewer (viser) served by the node or by `neural-mapping view`."""

    enabled: bool = param(False, "Serve the live web viewer (viser) from the node")
    port: int = param(8080, "Viewer HTTP/websocket port", lo=1, hi=65535)
    host: str = param("127.0.0.1", "Viewer bind address; anything but loopback exposes the map (and the controls) "
                                   "to the network and is logged as a warning")
    allow_control: bool = param(False, "Viewer buttons to pause/resume training, save and reset the map")

    def check(self) -> None:
        if not self.host.strip():
            raise ConfigError("viewer.host must not be empty (127.0.0.1 serves this machine only)")

    @property
    def exposed(self) -> bool:
        """True when the bind address reaches beyond this machine."""
        return self.host.strip() not in LOOPBACK_HOSTS
