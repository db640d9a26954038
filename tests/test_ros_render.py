"""ros/render.py: a rendered view in bands of rows, each a job on the online core."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from analytic_scenes import sphere_frames
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.mapper import Mapper
from neural_mapping.online import OnlineMapper
from neural_mapping.ros.render import RenderStopped, band_intrinsics, render_in_chunks

SMALL = {"device": "cpu", "train.rays_per_step": 256, "render.n_stratified": 8, "render.n_surface": 8,
         "encoding.hash_log2_table": 12, "encoding.hash_levels": 4, "encoding.hash_finest_m": 0.05}


@pytest.fixture(scope="module")
def mapped():
    frames, _ = sphere_frames(n=3, H=24, W=32)
    m = Mapper(apply_overrides(MapperConfig(), SMALL))
    for f in frames:
        m.add_frame(f)
    m.step(5)
    return m, frames[0]


def test_bands_equal_one_whole_render(mapped):
    m, f = mapped
    ref = m.render(f.T_WC, f.K, 24, 32)
    core = OnlineMapper(m)  # no trainer: jobs run inline
    calls = []
    real = m.render
    m.render = lambda T, K, H, W: (calls.append((H, K[1, 2])), real(T, K, H, W))[1]
    try:
        color, depth = render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=32 * 5, target_s=None)
    finally:
        del m.render
    assert [h for h, _ in calls] == [5, 5, 5, 5, 4]  # bands of 5 rows, the last one shorter
    assert [cy for _, cy in calls] == pytest.approx([f.K[1, 2] - r for r in (0, 5, 10, 15, 20)])
    np.testing.assert_allclose(depth, ref.depth, atol=1e-5)
    np.testing.assert_allclose(color, ref.color, atol=1e-5)
    assert band_intrinsics(f.K, 7)[1, 2] == f.K[1, 2] - 7 and band_intrinsics(f.K, 7)[0, 2] == f.K[0, 2]


def test_a_job_handed_during_a_render_runs_between_two_bands(mapped):
    m, f = mapped
    core = OnlineMapper(m, paused=True)
    core.start()
    order = []
    real = m.render

    def slow_render(T, K, H, W):
        order.append("band")
        time.sleep(0.05)
        return real(T, K, H, W)

    m.render = slow_render
    try:
        t = threading.Thread(target=lambda: render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=32 * 2, target_s=None))
        t.start()
        while order.count("band") < 2:
            time.sleep(0.005)
        core.run(lambda mm: order.append("query"))
        t.join(timeout=30)
    finally:
        del m.render
        core.stop()
    i = order.index("query")
    assert 2 <= i < 11 and order.count("band") == 12  # served while bands were still to come


def test_a_cancelled_or_late_render_stops_between_bands(mapped):
    m, f = mapped
    core = OnlineMapper(m)
    bands = []
    with pytest.raises(RenderStopped, match="shutting down"):
        render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=64, cancelled=lambda: len(bands) >= 3 or
                         bands.append(1))
    assert len(bands) == 3
    with pytest.raises(RenderStopped, match="time budget"):
        render_in_chunks(core, f.T_WC, f.K, 24, 32, deadline=time.monotonic() - 1)


def test_bands_are_sized_to_the_target_time(mapped):
    m, f = mapped
    core = OnlineMapper(m)
    heights = []

    def timed_render(T, K, H, W):  # 10 ms per row
        heights.append(H)
        time.sleep(0.01 * H)
        return SimpleNamespace(color=np.zeros((H, W, 3)), depth=np.zeros((H, W)))

    m.render = timed_render
    try:
        color, depth = render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=32, target_s=0.04)
    finally:
        del m.render
    assert sum(heights) == 24 and heights[:2] == [1, 2]  # grows at most 2x per band ...
    assert 3 <= max(heights) <= 5  # ... up to ~0.04 s / 10 ms = 4 rows (timing slack: one more)


def test_a_cancel_stops_the_band_in_flight_before_its_next_field_evaluation(mapped):
    """A cancel that comes while a band renders ends it before the field's next evaluation (a sphere
    trace evaluates it once per step): the old code ran the band to its end, however long it took."""
    m, f = mapped
    core = OnlineMapper(m)
    evals = []
    h = m.field.register_forward_pre_hook(lambda *_: evals.append(1))
    try:
        with pytest.raises(RenderStopped, match="shutting down"):
            # one band of the whole 24x32 image; cancelled from its 5th field evaluation on
            render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=24 * 32, target_s=None,
                             cancelled=lambda: len(evals) >= 5)
        full = len(evals)
    finally:
        h.remove()
    assert full == 5  # the 5th evaluation was refused; a whole band evaluates it ~20+ times
    assert len(m.field._forward_pre_hooks) == 0  # the render's hook is gone with the band
    evals.clear()
    h = m.field.register_forward_pre_hook(lambda *_: evals.append(1))
    try:
        render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=24 * 32, target_s=None)
    finally:
        h.remove()
    assert len(evals) > 10  # what the band would have taken
    core.stop()
    with pytest.raises(RenderStopped, match="shutting down"):  # the core's stop cancels as well
        render_in_chunks(core, f.T_WC, f.K, 24, 32)


def test_rows_wider_than_a_band_are_rendered_in_pieces_of_columns(mapped, monkeypatch):
    from neural_mapping.ros import render as render_mod

    m, f = mapped
    ref = m.render(f.T_WC, f.K, 24, 32)
    monkeypatch.setattr(render_mod, "MAX_BAND_RAYS", 10)
    core = OnlineMapper(m)
    calls = []
    real = m.render
    m.render = lambda T, K, H, W: (calls.append((H, W, K[0, 2], K[1, 2])), real(T, K, H, W))[1]
    try:
        color, depth = render_in_chunks(core, f.T_WC, f.K, 24, 32, chunk_rays=10)
    finally:
        del m.render
    assert all(H * W <= 10 for H, W, _, _ in calls) and len(calls) == 24 * 4
    assert [W for _, W, _, _ in calls[:4]] == [10, 10, 10, 2]
    assert [cx for _, _, cx, _ in calls[:4]] == pytest.approx([f.K[0, 2] - c for c in (0, 10, 20, 30)])
    np.testing.assert_allclose(depth, ref.depth, atol=1e-5)
    np.testing.assert_allclose(color, ref.color, atol=1e-5)
