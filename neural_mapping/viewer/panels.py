"""The viewer's GUI: status, the look-through panel, layer toggles with the SDF slice height, and the
controls (pause/resume, save, reset), which exist only when the viewer allows control."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from neural_mapping.viewer.look import MODES, QUALITIES


@dataclass
class Status:
    state: str = "starting"
    frames_received: int = 0
    frames_integrated: int = 0
    keyframes: int = 0
    steps: int = 0
    steps_per_s: float = 0.0
    loss: float = float("nan")
    memory_mb: float = 0.0
    triangles: int = 0
    chunks: int = 0
    mesh_s: float = 0.0
    render_s: float = float("nan")

    def markdown(self) -> str:
        rs = "-" if not np.isfinite(self.render_s) else f"{self.render_s * 1000:.0f} ms"
        return (f"**{self.state}**  \n"
                f"frames {self.frames_integrated} / {self.frames_received} received, keyframes {self.keyframes}  \n"
                f"steps {self.steps} ({self.steps_per_s:.1f}/s), loss {self.loss:.4g}  \n"
                f"map memory {self.memory_mb:.1f} MB  \n"
                f"mesh {self.triangles:,} triangles in {self.chunks} chunks ({self.mesh_s * 1000:.0f} ms)  \n"
                f"last render {rs}")


@dataclass
class Controls:
    """What the control buttons call (each returns a line for the log panel)."""

    pause: Callable[[bool], str]
    save: Callable[[str], str]
    reset: Callable[[], str]


class Panels:
    """Builds the GUI on a viser server; ``on_*`` callbacks are set by the viewer."""

    def __init__(self, server, *, sdf_z: float, z_range: tuple[float, float], controls: Controls | None,
                 paused: bool = False, save_path: str = "map.pt") -> None:
        self.server = server
        gui = server.gui
        self.on_look_change: Callable[[], None] = lambda: None
        self.on_sdf_height: Callable[[float], None] = lambda z: None
        self.on_layers: Callable[[str, bool], None] = lambda name, visible: None
        with gui.add_folder("Status"):
            self.status_md = gui.add_markdown(Status().markdown())
        with gui.add_folder("Look through the field"):
            self.look_on = gui.add_checkbox("Render from this view", True)
            self.look_mode = gui.add_dropdown("Mode", MODES, initial_value="color")
            self.look_quality = gui.add_dropdown("Quality", QUALITIES, initial_value="preview",
                                                 hint="preview: sphere tracing near observed surfaces (fast); "
                                                      "full: the reference render (neural-mapping render)")
            self.look_rows = gui.add_slider("Resolution (rows)", min=60, max=480, step=20, initial_value=240)
            self.look_image = gui.add_image(np.zeros((24, 32, 3), np.uint8), label="view", format="jpeg")
            self.look_md = gui.add_markdown("move the camera, then hold still")
        with gui.add_folder("Layers"):
            self.layer = {n: gui.add_checkbox(n, True) for n in ("mesh", "frusta", "trajectory", "occupancy", "sdf slice")}
            lo, hi = z_range
            self.sdf_z = gui.add_slider("SDF slice height (m)", min=float(lo), max=float(hi), step=0.05,
                                        initial_value=float(np.clip(sdf_z, lo, hi)))
        for h in (self.look_on, self.look_mode, self.look_quality, self.look_rows):
            h.on_update(lambda _e: self.on_look_change())
        self.sdf_z.on_update(lambda _e: self.on_sdf_height(float(self.sdf_z.value)))
        for name, h in self.layer.items():
            h.on_update(lambda _e, name=name, h=h: self.on_layers(name, bool(h.value)))
        self.controls = controls
        self.pause_btn = self.save_btn = self.reset_btn = None
        if controls is not None:
            self._build_controls(controls, paused, save_path)

    def _build_controls(self, c: Controls, paused: bool, save_path: str) -> None:
        gui = self.server.gui
        with gui.add_folder("Controls"):
            self.pause_btn = gui.add_button("Resume training" if paused else "Pause training")
            self.save_path = gui.add_text("Save to", save_path)
            self.save_btn = gui.add_button("Save map")
            self.reset_btn = gui.add_button("Reset map", color="red")
            self.control_md = gui.add_markdown("")
        self._paused = paused

        def toggle(_e):
            self._paused = not self._paused
            self.control_md.content = c.pause(self._paused)
            self.pause_btn.label = "Resume training" if self._paused else "Pause training"

        self.pause_btn.on_click(toggle)
        self.save_btn.on_click(lambda _e: setattr(self.control_md, "content", c.save(str(self.save_path.value))))
        self.reset_btn.on_click(lambda _e: setattr(self.control_md, "content", c.reset()))

    def set_status(self, st: Status) -> None:
        self.status_md.content = st.markdown()

    def show_look(self, img: np.ndarray, info: dict) -> None:
        self.look_image.image = img
        self.look_md.content = (f"{info['W']}x{info['H']} {info.get('quality', '')} in {info['seconds'] * 1000:.0f} ms, "
                                f"surface in {info['hit'] * 100:.0f}% of pixels")
