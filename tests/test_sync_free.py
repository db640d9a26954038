"""The training step and the sphere-traced render wait for no GPU result (issue 15 item 2).

On CUDA, ``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ``nonzero`` and boolean-mask
indexing block the host until the GPU catches up (``torch.cuda.set_sync_debug_mode`` flags them, but
only on CUDA). Here, on the CPU, every such call made *from neural_mapping's own code* raises while
``Mapper.step`` runs (calls from inside torch, such as Adam reading its CPU step counter, are not
ours and are allowed): a sync put back into the step path fails this test.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import pytest
import torch

from analytic_scenes import sphere_frames
from neural_mapping import rendering as rd
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.mapper import Mapper

PKG = os.path.dirname(os.path.abspath(sys.modules["neural_mapping"].__file__)) + os.sep

SMALL = {"device": "cpu", "train.rays_per_step": 512, "render.n_stratified": 8, "render.n_surface": 8,
         "encoding.hash_log2_table": 14, "encoding.hash_levels": 6, "encoding.hash_finest_m": 0.02,
         # the pure-PyTorch encoding: what CUDA runs without Triton (the CPU kernel's wrapper copies its
         # spec to the CPU, which is free there and never runs on CUDA)
         "encoding.fast_cpu_kernel": False}


class SyncCalled(AssertionError):
    pass


def _ours(depth: int = 2) -> str | None:
    """The neural_mapping source file that made the call, or None (torch, tests, ...)."""
    f = sys._getframe(depth)
    name = f.f_code.co_filename
    return name if name.startswith(PKG) else None


@contextlib.contextmanager
def no_host_syncs():
    """Within: neural_mapping code that syncs the host with the device raises SyncCalled."""
    T = torch.Tensor
    saved = {}

    def guard(name):
        orig = getattr(T, name)

        def wrapper(self, *a, **k):
            where = _ours()
            if where is not None:
                line = sys._getframe(1).f_lineno
                raise SyncCalled(f"Tensor.{name} called from {os.path.relpath(where, PKG)}:{line} in the step path")
            return orig(self, *a, **k)

        saved[name] = orig
        setattr(T, name, wrapper)

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "nonzero"):
        guard(name)
    orig_getitem = T.__getitem__

    def getitem(self, idx):
        parts = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            where = _ours()
            if where is not None:
                raise SyncCalled(f"boolean-mask indexing from {os.path.relpath(where, PKG)}:"
                                 f"{sys._getframe(1).f_lineno} in the step path")
        return orig_getitem(self, idx)

    saved["__getitem__"] = orig_getitem
    T.__getitem__ = getitem
    orig_nonzero = torch.nonzero

    def nonzero(*a, **k):
        if _ours() is not None:
            raise SyncCalled("torch.nonzero in the step path")
        return orig_nonzero(*a, **k)

    torch.nonzero = nonzero
    try:
        yield
    finally:
        for name, orig in saved.items():
            setattr(T, name, orig)
        torch.nonzero = orig_nonzero


def cfg(**kw) -> MapperConfig:
    d = dict(SMALL)
    d.update(kw)
    return apply_overrides(MapperConfig(), d)


@pytest.fixture(scope="module")
def frames():
    fr, _ = sphere_frames(n=8)
    return fr


def test_the_guard_catches_what_it_should():
    """The check itself: a sync from neural_mapping code raises, torch's own do not."""
    x = torch.ones(3)
    with no_host_syncs():
        torch.optim.Adam([torch.nn.Parameter(torch.ones(2))]).step()  # torch internals: allowed
        with pytest.raises(SyncCalled):
            rd.sphere_trace(lambda p: p.norm(dim=-1) - 0.5, x.new_zeros(4, 3) - 2, torch.eye(3)[[0, 0, 0, 0]],
                            x.new_zeros(4), x.new_full((4,), 5.0), n_steps=3)  # CPU: compaction syncs
    with no_host_syncs():
        float(x.sum())  # from this test file: not ours


@pytest.mark.parametrize("overrides", [
    {},  # the defaults (sdf)
    {"train.w_eikonal": 0.1, "train.w_sdf_bound": 0.5, "train.w_depth": 0.1, "train.w_color": 1.0},
    {"field.kind": "nerf"},
], ids=["sdf", "sdf-all-terms", "nerf"])
def test_training_step_makes_no_host_sync(frames, overrides):
    m = Mapper(cfg(**overrides))
    for f in frames:
        assert m.add_frame(f)
    assert len(m.keyframes) >= 2  # keyframe rays in the batch: update_losses runs its keyframe part
    m.step(2)  # warm-up outside the guard (lazy buffers, first-call paths)
    with no_host_syncs():
        st = m.step(3)
    # the values come back when read, after the step
    assert st.rays == 3 * 512 and np.isfinite(st.loss) and np.isfinite(m.stats.last_loss)
    assert st.loss == m.stats.last_loss and m.stats.steps == 5
    assert all(np.isfinite(v) for v in m.last_terms.as_dict().values())
    assert all(np.isfinite(k.loss) for k in m.keyframes.keyframes)


def test_masked_sphere_trace_equals_the_compacted_one():
    """The CUDA sphere tracer (every ray, masked, no syncs) gives the CPU tracer's t and hit."""
    g = torch.Generator().manual_seed(0)
    R = 500
    o = torch.randn(R, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, -2.0])
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + torch.randn(R, 3, generator=g) * 0.4, dim=-1)

    def sdf(p):  # a sphere and a plane behind it
        return torch.minimum(p.norm(dim=-1) - 0.5, 1.5 - p[:, 2])

    t_near = torch.rand(R, generator=g) * 0.3
    t_far = torch.full((R,), 3.0)
    t_far[:50] = 0.1  # some rays exit before any surface
    t0, h0 = rd.sphere_trace(sdf, o, d, t_near, t_far, n_steps=40)
    with no_host_syncs():
        t1, h1 = rd._sphere_trace_masked(sdf, o, d, t_near, t_far, 40, 2e-3, 0.9, 1e-3)
    assert torch.equal(h0, h1) and 0 < int(h0.sum()) < R
    assert torch.allclose(t0[h0], t1[h1], atol=1e-6)
