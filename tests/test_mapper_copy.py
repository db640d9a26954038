"""Mapper.snapshot and each map's own torch.Generator: copying or building a map while another trains
leaves the trainer's sample sequence (and so its weights) exactly as without the copies."""

import threading

import numpy as np
import torch

from analytic_scenes import sphere_frames
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.mapper import Mapper

SMALL = {"device": "cpu", "train.rays_per_step": 256, "render.n_stratified": 8, "render.n_surface": 8,
         "encoding.hash_log2_table": 12, "encoding.hash_levels": 4, "encoding.hash_finest_m": 0.05}
STEPS = 6


def _cfg(**kw) -> MapperConfig:
    return apply_overrides(MapperConfig(), {**SMALL, **kw})


def _trained(frames, copier=None) -> dict:
    """Weights after STEPS steps; ``copier(m)`` (if given) runs in another thread during training."""
    m = Mapper(_cfg())
    for f in frames:
        assert m.add_frame(f)
    torch.manual_seed(0)  # so a map that drew from the global RNG would also be reproducible without copies
    done = threading.Event()
    copies = []
    t = None
    if copier is not None:
        def loop():
            while not done.is_set():
                copies.append(copier(m))
        t = threading.Thread(target=loop)
        t.start()
    for _ in range(STEPS):
        m.step(1)
        if copier is not None:  # at least one copy between every two steps, whatever the thread timing
            copies.append(copier(m))
    done.set()
    if t is not None:
        t.join()
    assert copier is None or len(copies) >= STEPS
    return {k: v.clone() for k, v in m.field.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_copies_and_new_maps_during_training_leave_the_trainers_samples_unchanged():
    frames, _ = sphere_frames(n=6, H=24, W=32)
    ref = _trained(frames)
    assert _same(ref, _trained(frames)), "training is not reproducible to begin with"
    prev = {}

    def copy_and_build(m):
        prev["snap"] = m.snapshot(into=prev.get("snap"))  # refreshed in place
        Mapper(_cfg(**{"train.seed": 7}))  # a new map with another seed: builds a field, seeds its own RNG
        torch.rand(3)  # someone else drawing from the global RNG
        return prev["snap"]

    assert _same(ref, _trained(frames, copy_and_build))


def test_snapshot_is_an_independent_copy_refreshed_in_place():
    frames, _ = sphere_frames(n=6, H=24, W=32)
    m = Mapper(_cfg())
    for f in frames:
        m.add_frame(f)
    m.step(2)
    pts = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.8]], np.float32)
    snap = m.snapshot()
    assert snap is not m and snap.stats.steps == 2
    assert np.array_equal(snap.query(pts).sdf, m.query(pts).sdf)
    assert len(snap.keyframes) == 0 and not snap.optimizer.state  # no training state in a copy
    m.step(3)
    before = snap.query(pts).sdf
    assert not np.array_equal(before, m.query(pts).sdf)  # the live map moved on, the copy did not
    assert snap.stats.steps == 2
    again = m.snapshot(into=snap)
    assert again is snap and snap.stats.steps == 5
    assert np.array_equal(snap.query(pts).sdf, m.query(pts).sdf)
    assert snap.coverage is not m.coverage
    assert np.array_equal(snap.coverage.observed(pts.astype(np.float64)), m.coverage.observed(pts.astype(np.float64)))


def test_two_maps_with_the_same_seed_sample_the_same_rays_whatever_runs_between():
    frames, _ = sphere_frames(n=4, H=24, W=32)
    a, b = Mapper(_cfg()), Mapper(_cfg())
    for f in frames:
        a.add_frame(f)
        b.add_frame(f)
    ba = a.keyframes.sample(64, 0.25, generator=a.generator)
    torch.manual_seed(123)
    torch.rand(10)
    bb = b.keyframes.sample(64, 0.25, generator=b.generator)
    assert torch.equal(ba.dirs_W, bb.dirs_W) and torch.equal(ba.depth, bb.depth)
