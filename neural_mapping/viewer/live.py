"""What `neural-mapping view` shows: a map file (inspected) or an input mapped live at its pace."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from neural_mapping.errors import InputError

log = logging.getLogger(__name__)


def is_map_file(path: str | Path) -> bool:
    """A map file (``mapfile.save_map``'s format) rather than an input (a dataset folder or a bag)."""
    from neural_mapping.mapfile import read_header

    p = Path(path)
    if not p.is_file():
        return False
    try:
        read_header(p)
    except Exception:  # noqa: BLE001 - not our map format: let open_source say what it is
        return False
    return True


def core_for_map(path: str | Path, device: str | None = None):
    """An OnlineMapper on a loaded map, paused (inspected, not changed; the controls may resume
    training when the file holds keyframes), started: renders run as jobs on its trainer."""
    from neural_mapping.mapfile import load_map
    from neural_mapping.online import OnlineMapper

    core = OnlineMapper(load_map(path, device=device), paused=True)
    core.start()
    return core


def feed(core, frames, trajectory, stop: threading.Event, rate_hz: float | None = None,
         max_frames: int | None = None) -> int:
    """Put ``frames`` into the core at their recorded pace (stamps, or ``rate_hz``), as
    ``runner.run_mapping``'s realtime path does, each also to the viewer's trajectory; returns how many."""
    t0 = stamp0 = None
    n = 0
    for i, f in enumerate(frames):
        if stop.is_set() or (max_frames is not None and i >= max_frames):
            break
        if t0 is None:
            t0, stamp0 = time.perf_counter(), f.stamp_ns
        due = t0 + (i / rate_hz if rate_hz else max(0.0, (f.stamp_ns - stamp0) * 1e-9))
        if stop.wait(max(0.0, due - time.perf_counter())):
            break
        core.put(f)
        trajectory.observe(f)
        n += 1
    return n


def start_live(source, cfg, viewer_factory, rate_hz: float | None = None, max_frames: int | None = None):
    """(core, viewer, feeder thread): a new map trained online from ``source``, shown as it grows."""
    from neural_mapping.mapper import Mapper
    from neural_mapping.online import OnlineMapper, WarnThrottle

    core = OnlineMapper(Mapper(cfg), on_warning=WarnThrottle(log.warning))
    core.start()
    viewer = viewer_factory(core)
    stop = viewer._stop

    def run():
        try:
            n = feed(core, source, viewer.trajectory, stop, rate_hz, max_frames)
            log.warning(f"view: all {n} input frames fed; training goes on (Ctrl-C to quit)")
        except Exception as e:  # noqa: BLE001 - report: the viewer keeps showing what was mapped
            log.warning(f"view: reading the input failed: {type(e).__name__}: {e}")

    t = threading.Thread(target=run, name="viewer_feed", daemon=True)
    t.start()
    return core, viewer, t


def check_input(path: str | Path) -> None:
    if not Path(path).exists():
        raise InputError(f"{path}: no such map file, dataset folder or bag")
