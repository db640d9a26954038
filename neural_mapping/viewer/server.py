"""The viewer: a viser server on an :class:`~neural_mapping.online.OnlineMapper`, and the loop that
keeps the page up to date.

Every product shown comes from the core's map copy (``core.map_copy()``), never the live map: the
mesh from a :class:`~neural_mapping.products.MeshExtractor` kept on the copy (it stays one object
per map lineage, so the extractor's tile cache makes each update incremental), sent in chunks
(:mod:`.mesh_chunks`); the occupancy plane and the SDF slice from the products. Renders through
the field are jobs on the trainer (:mod:`.look`). The heavy work (mesh, planes) is held to a duty
fraction of wall time (``duty``) so training keeps the CPU; status, trajectory and frusta are cheap
and follow every ``tick_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from neural_mapping.viewer.config import ViewerConfig
from neural_mapping.viewer.look import LookRequest, LookThrough, camera_T_WC, render_look
from neural_mapping.viewer.mesh_chunks import MeshChunks
from neural_mapping.viewer.panels import Controls, Panels, Status
from neural_mapping.viewer.scene import SceneLayers, Trajectory, keyframes_of

log = logging.getLogger(__name__)


def map_memory_mb(mapper) -> float:
    """Weights and keyframes of a map (MB)."""
    n = sum(p.numel() * p.element_size() for p in mapper.field.parameters())
    return (n + int(getattr(mapper.keyframes, "nbytes", 0))) / 1e6


#: shares of wall time for the look-through renders (on the trainer) and for the heavy updates (mesh,
#: planes): together at most 9 %, inside issue 14's 10 % training overhead (at 0.10 + 0.08 a quiet
#: machine measured 11-14 %)
LOOK_DUTY = 0.05


class Viewer:
    """``Viewer(core, cfg).start()`` serves the page at http://host:port until ``stop()``."""

    def __init__(self, core, cfg: ViewerConfig | None = None, *, logger=None, tick_s: float = 0.25, duty: float = 0.04,
                 min_steps: int = 20, mesh_budget_s: float = 0.5, save_dir: str | Path = ".") -> None:
        self.core, self.cfg = core, cfg or ViewerConfig()
        self.log = logger or log
        self.tick_s, self.duty, self.min_steps, self.mesh_budget_s = tick_s, duty, min_steps, mesh_budget_s
        self.save_dir = Path(save_dir)
        self.trajectory = Trajectory()
        self.status = Status()
        self.server = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._extractor = None
        self._mesh_key = self._planes_key = None
        self._heavy_after = 0.0  # monotonic time before which no heavy update starts (duty budget)
        self._planes_dirty = True
        self._traj_version = -1
        self._lineage = core.lineage
        self._camera_set = False
        self.mesh_updates: list = []  # ChunkUpdate of every mesh update (tests, benchmarks)

    # ------------------------------------------------------------------ lifetime

    def start(self) -> "Viewer":
        import viser

        c = self.cfg
        if c.exposed:
            self.log.warning(f"viewer: serving on {c.host}:{c.port}, reachable from other machines: anyone who can "
                             f"reach it sees the map" + (" and can pause, save and reset it" if c.allow_control else ""))
        self.server = viser.ViserServer(host=c.host, port=c.port, verbose=False)
        self.chunks = MeshChunks(self.server)
        self.layers = SceneLayers(self.server)
        ocfg = self.core.mapper.cfg.occupancy
        controls = Controls(self._pause, self._save, self._reset) if c.allow_control else None
        self.panels = Panels(self.server, sdf_z=ocfg.esdf_height, z_range=(-1.0, 4.0), controls=controls,
                             paused=self.core.paused)
        self.panels.on_look_change = self._look_settings_changed
        self.panels.on_sdf_height = lambda z: self._mark_planes()
        self.panels.on_layers = self._set_layer
        self.look = LookThrough(self.core.run, self._show_look, ready=self._map_ready, duty=LOOK_DUTY)
        self.server.on_client_connect(self._on_client)
        for name, fn in (("viewer_loop", self._loop), ("viewer_look", lambda: self.look.run_forever(self._stop))):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.log.info(f"viewer: http://{c.host}:{self.server.get_port()}")
        return self

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the loop and the renders (daemon threads: a mesh update still running is left to
        end with the process, so the node's shutdown is not held up) and the server."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout)
        if self.server is not None:
            self.server.stop()

    # ------------------------------------------------------------------ the browser camera

    def _on_client(self, client) -> None:
        self._place_camera([client])
        client.camera.on_update(lambda cam: self.look.camera_moved(self._request(cam)))

    def _request(self, cam) -> LookRequest:
        p = self.panels
        return LookRequest(camera_T_WC(cam.wxyz, cam.position), float(cam.fov), float(cam.aspect),
                           int(p.look_rows.value), str(p.look_mode.value), str(p.look_quality.value))

    def _look_settings_changed(self) -> None:
        self.look.enabled = bool(self.panels.look_on.value)
        for client in self.server.get_clients().values():  # the latest camera, with the new settings
            try:
                self.look.camera_moved(self._request(client.camera))
            except AssertionError:  # this client has not reported its camera yet
                pass
        self.look.force()

    def _show_look(self, img: np.ndarray, info: dict) -> None:
        self.status.render_s = info["seconds"]
        self.panels.show_look(img, info)

    def render(self, req: LookRequest):
        """The look-through image of ``req`` (as the panel shows it), rendered on the trainer."""
        return render_look(self.core.run, req)

    def _place_camera(self, clients) -> None:
        b = self.core.mapper.bounds()
        if b is None:
            return
        lo, hi = (np.asarray(x, np.float64) for x in b)
        c, ext = 0.5 * (lo + hi), float(np.max(hi - lo))
        for client in clients:
            client.camera.position = c + np.array([0.0, -0.9 * ext, 0.8 * ext])
            client.camera.look_at = c
        self._camera_set = True

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - keep serving
                self.log.warning(f"viewer: update failed: {type(e).__name__}: {e}")
                self._stop.wait(1.0)

    def tick(self) -> None:
        """One update: status, trajectory, frusta; the mesh and planes when the map changed and the duty allows."""
        core = self.core
        m = core.mapper
        if core.lineage != self._lineage:  # reset or a new map: start over
            self._lineage = core.lineage
            self.chunks.clear()
            self.layers.clear()
            self.trajectory.clear()
            self._extractor = self._mesh_key = self._planes_key = None
        self.trajectory.observe(core.latest_frame)
        kfs = keyframes_of(m)
        if self.trajectory.version != self._traj_version:
            self._traj_version = self.trajectory.version
            self.layers.set_trajectory(self.trajectory.points())
        elif self._traj_version == 0 and self.layers.frusta != len(kfs):  # no frame seen (a map file): keyframes
            self.layers.set_trajectory(np.array([k.T_WC_np[:3, 3] for k in sorted(kfs, key=lambda k: k.stamp_ns)]))
        self.layers.set_frusta(kfs)
        self._update_status(m)
        if not self._camera_set:
            self._place_camera(self.server.get_clients().values())
        key = (core.lineage, m.stats.steps, m.stats.frames_added)
        if not self._map_ready() or time.monotonic() < self._heavy_after:
            return
        t0 = time.monotonic()
        pending = self._extractor is not None and self._extractor.stats.tiles_pending > 0  # a budgeted update left some
        if key != self._mesh_key or pending:
            self.update_mesh()
            self._mesh_key = key
        elif key != self._planes_key or self._planes_dirty:
            self.update_planes()
            self._planes_key = key
        spent = time.monotonic() - t0
        self._heavy_after = time.monotonic() + spent * (1.0 / self.duty - 1.0)

    def _map_ready(self) -> bool:
        """Products and renders are worth computing: ``min_steps`` trained (an untrained field has
        surfaces everywhere), or a map that is not training (a loaded one)."""
        m = self.core.mapper
        return m.stats.steps >= self.min_steps or (m.stats.frames_added > 0 and (self.core.paused or not self.core.running))

    def _update_status(self, m) -> None:
        st, s = self.core.stats(), self.status
        s.state, s.frames_received, s.frames_integrated = st.state, st.frames_received, st.frames_integrated
        s.keyframes, s.steps, s.steps_per_s = len(m.keyframes), st.steps, st.steps_per_s
        s.loss, s.memory_mb = float(m.stats.last_loss), map_memory_mb(m)
        self.panels.set_status(s)

    def update_mesh(self):
        """Extract incrementally on the map copy and resend the chunks that changed; returns the ChunkUpdate."""
        from neural_mapping.products import MeshExtractor

        t0 = time.perf_counter()
        with self.core.map_copy() as snap:
            if self._extractor is None or self._extractor.mapper is not snap:
                self._extractor = MeshExtractor(snap, snapshot=False)  # the copy is already a copy
            v, f, c = self._extractor.extract_arrays(full=False, budget_s=self.mesh_budget_s)
        u = self.chunks.update(v, f, c)
        u.seconds = time.perf_counter() - t0
        self.status.triangles, self.status.chunks, self.status.mesh_s = u.triangles, u.chunks, u.seconds
        self.mesh_updates.append(u)
        return u

    def _mark_planes(self) -> None:
        self._planes_dirty = True
        self._heavy_after = 0.0

    def update_planes(self) -> None:
        """The 2D occupancy (its band) and the SDF slice (at the panel's height) as textured planes."""
        from neural_mapping.products import esdf_slice, occupancy_slice_2d
        from neural_mapping.viewer.scene import occupancy_rgb, sdf_rgb

        self._planes_dirty = False
        z = float(self.panels.sdf_z.value)
        with self.core.map_copy() as snap:
            oc = snap.cfg.occupancy
            occ = occupancy_slice_2d(snap, oc.z_min, oc.z_max, oc.resolution_m)
            es = esdf_slice(snap, z, oc.resolution_m)
        show = {n: bool(h.value) for n, h in self.panels.layer.items()}
        self.layers.set_plane("occupancy", occupancy_rgb(occ.data), occ.origin_xy, occ.resolution, oc.z_min - 0.01,
                              visible=show["occupancy"])
        self.layers.set_plane("sdf_slice", sdf_rgb(es.distance), es.origin_xy, es.resolution, z,
                              visible=show["sdf slice"])

    def _set_layer(self, name: str, visible: bool) -> None:
        if name == "mesh":
            self.chunks.set_visible(visible)
        elif name == "frusta":
            self.layers.set_frusta_visible(visible)
        elif name == "trajectory":
            self.layers.set_trajectory_visible(visible)
        else:
            self.layers.set_plane_visible({"occupancy": "occupancy", "sdf slice": "sdf_slice"}[name], visible)

    # ------------------------------------------------------------------ controls (--allow-control)

    def _pause(self, paused: bool) -> str:
        self.core.set_paused(paused)
        return "training paused" if paused else "training resumed"

    def _save(self, path: str) -> str:
        from neural_mapping.mapfile import save_map

        p = Path(path).expanduser()
        p = p if p.is_absolute() else self.save_dir / p
        with self.core.map_copy() as snap:
            out = save_map(snap, p)
        self.log.info(f"viewer: saved the map to {out}")
        return f"saved {out}"

    def _reset(self) -> str:
        self.core.reset()
        self._camera_set = False
        return "map reset"
