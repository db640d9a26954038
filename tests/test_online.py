"""The online core without ROS: queue, trainer thread, jobs between steps, pause, stop, errors, map copy."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import torch

from analytic_scenes import sphere_frames
from neural_mapping.config import MapperConfig, apply_overrides
from neural_mapping.mapper import Mapper
from neural_mapping.online import OnlineMapper, WarnThrottle

SMALL = {"device": "cpu", "train.rays_per_step": 256, "render.n_stratified": 8, "render.n_surface": 8,
         "encoding.hash_log2_table": 12, "encoding.hash_levels": 4, "encoding.hash_finest_m": 0.05}


class FakeMapper:
    """Records what the trainer does, in order, with the thread that did it."""

    def __init__(self, step_s: float = 0.0, fail_on_step: int | None = None) -> None:
        self.stats = SimpleNamespace(frames_added=0, steps=0)
        self.log: list[tuple] = []
        self.step_s = step_s
        self.fail_on_step = fail_on_step
        self.stepping = threading.Event()

    def add_frame(self, f) -> bool:
        if f == "bad":
            raise ValueError("bad frame")
        self.log.append(("add", f))
        self.stats.frames_added += 1
        return True

    def step(self, n: int = 1) -> SimpleNamespace:
        self.log.append(("step_begin", threading.current_thread().name))
        self.stepping.set()
        time.sleep(self.step_s)
        self.stats.steps += 1
        self.log.append(("step_end",))
        if self.fail_on_step is not None and self.stats.steps == self.fail_on_step:
            raise RuntimeError("diverged")
        return SimpleNamespace(rays=1)  # as Mapper.step's StepStats: rays trained (0 = nothing to train on)

    def reset(self) -> None:
        self.stats = SimpleNamespace(frames_added=0, steps=0)


def _wait(cond, timeout=10.0):
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, "timed out"
        time.sleep(0.005)


@pytest.fixture
def cores():
    made = []
    yield made
    for c in made:
        c.stop(timeout=5.0)


def test_put_drops_the_oldest_and_counts_it():
    core = OnlineMapper(FakeMapper(), queue_size=3)
    assert [core.put(i) for i in range(5)] == [False, False, False, True, True]
    st = core.stats()
    assert (st.frames_received, st.dropped_queue_full, st.queue_length) == (5, 2, 3)
    assert [core.queue.get_nowait() for _ in range(3)] == [2, 3, 4]


def test_at_most_frames_per_step_frames_between_two_steps(cores):
    m = FakeMapper()
    core = OnlineMapper(m, queue_size=16, frames_per_step=2)
    cores.append(core)
    for i in range(5):
        core.put(i)
    core.start()
    assert core.wait_until_drained(10.0)
    core.stop()
    kinds = [e[0] for e in m.log if e[0] != "step_end"]
    assert kinds[:8] == ["add", "add", "step_begin", "add", "add", "step_begin", "add", "step_begin"]
    assert [e[1] for e in m.log if e[0] == "add"] == [0, 1, 2, 3, 4]
    assert core.stats().frames_integrated == 5


def test_a_job_runs_on_the_trainer_between_two_steps_and_a_nested_job_inline(cores):
    m = FakeMapper(step_s=0.02)
    core = OnlineMapper(m)
    cores.append(core)
    core.put("f")
    core.start()
    _wait(lambda: m.stats.steps >= 2)
    seen = []

    def job(mapper):
        seen.append(("job", threading.current_thread().name))
        mapper.log.append(("job",))
        inner = core.run(lambda mm: threading.current_thread().name)  # from the trainer: inline, no deadlock
        return mapper is m, inner

    assert core.run(job) == (True, "neural_mapper_train")
    assert seen == [("job", "neural_mapper_train")]
    i = m.log.index(("job",))
    assert m.log[i - 1][0] == "step_end" or m.log[i - 1][0] == "add"  # not inside a step
    with pytest.raises(ZeroDivisionError):
        core.run(lambda mm: 1 / 0)  # the job's exception reaches the caller; the trainer goes on
    n = m.stats.steps
    _wait(lambda: m.stats.steps > n)


def test_run_is_inline_without_a_trainer():
    core = OnlineMapper(FakeMapper())
    assert core.run(lambda mm: threading.current_thread().name) == threading.current_thread().name


def test_pause_makes_the_trainer_idle_and_counts_frames_as_dropped_paused(cores):
    m = FakeMapper(step_s=0.05)
    core = OnlineMapper(m)
    cores.append(core)
    core.put("a")
    core.start()
    m.stepping.wait(5.0)
    assert core.set_paused(True, wait_s=5.0)  # answers once the running step has finished
    assert m.log[-1] == ("step_end",)
    steps = m.stats.steps
    for i in range(3):
        core.put(i)
    _wait(lambda: core.stats().dropped_paused == 3)
    time.sleep(0.1)
    st = core.stats()
    assert m.stats.steps == steps and m.stats.frames_added == 1 and st.state == "paused" and st.queue_length == 0
    assert core.run(lambda mm: mm.stats.steps) == steps  # jobs still run while paused
    core.set_paused(False)
    _wait(lambda: m.stats.steps > steps)


def test_stop_is_idempotent_and_returns_within_its_timeout_while_a_step_runs(cores):
    m = FakeMapper(step_s=0.3)
    core = OnlineMapper(m)
    cores.append(core)
    core.put("a")
    core.start()
    m.stepping.wait(5.0)
    t0 = time.monotonic()
    assert core.stop(timeout=2.0)  # the running step ends, no other starts
    assert time.monotonic() - t0 < 1.0 and not core.running
    n = m.stats.steps
    assert core.stop(timeout=2.0) and m.stats.steps == n  # again: nothing to do
    assert core.run(lambda mm: 7) == 7  # after the stop: inline

    slow = FakeMapper(step_s=1.0)
    core2 = OnlineMapper(slow)
    cores.append(core2)
    core2.put("a")
    core2.start()
    slow.stepping.wait(5.0)
    t0 = time.monotonic()
    assert core2.stop(timeout=0.2) is False  # the step outlasts the timeout: reported, not waited for
    assert time.monotonic() - t0 < 0.6
    assert core2.stop(timeout=3.0) and slow.stats.steps == 1


def test_stop_before_start_and_from_the_trainer():
    core = OnlineMapper(FakeMapper())
    assert core.stop() and core.stop()
    m = FakeMapper(step_s=0.01)
    core = OnlineMapper(m)
    core.put("a")
    core.start()
    _wait(lambda: m.stats.steps >= 1)
    assert core.run(lambda mm: core.stop()) is False  # the trainer cannot wait for itself; it still stops
    _wait(lambda: not core.running)


def test_a_training_error_is_reported_and_training_goes_on(cores):
    m = FakeMapper(fail_on_step=2)
    warnings = []
    core = OnlineMapper(m, on_warning=lambda kind, msg: warnings.append((kind, msg)))
    cores.append(core)
    core.put("a")
    core.start()
    _wait(lambda: m.stats.steps >= 4)
    st = core.stats()
    assert st.last_error == "training: RuntimeError: diverged" and st.state.startswith("error: training")
    assert warnings and warnings[0][0] == "error_training" and "diverged" in warnings[0][1]
    core.put("bad")  # refused by the mapper: counted, the loop goes on
    _wait(lambda: core.stats().dropped_refused == 1)
    core.reset()
    assert core.stats().last_error == "" and core.lineage == 1


def test_warn_throttle_emits_once_per_interval_per_kind():
    out = []
    w = WarnThrottle(out.append, lambda: 60.0)
    w("a", "one")
    w("a", "two")
    w("b", "three")
    assert out == ["one (counted as a; further ones throttled)", "three (counted as b; further ones throttled)"]


def test_reset_and_swap_clear_the_queue_and_start_a_new_lineage():
    m = FakeMapper()
    core = OnlineMapper(m, queue_size=4)
    core.put(1)
    core.put(2)
    core.reset()
    assert core.lineage == 1 and core.stats().queue_length == 0 and core.wait_until_drained(0.1)
    other = FakeMapper()
    core.swap(other)
    assert core.mapper is other and core.lineage == 2


def _small_mapper(frames) -> Mapper:
    m = Mapper(apply_overrides(MapperConfig(), SMALL))
    for f in frames:
        assert m.add_frame(f)
    return m


def test_snapshot_is_cached_until_the_map_changes_and_refreshed_in_place(cores):
    frames, _ = sphere_frames(n=4, H=24, W=32)
    m = _small_mapper(frames)
    core = OnlineMapper(m, paused=True)
    cores.append(core)
    core.start()
    copied_on = []
    real = m.snapshot
    m.snapshot = lambda into=None: (copied_on.append(threading.current_thread().name), real(into=into))[1]
    s1 = core.snapshot()
    assert core.snapshot() is s1 and copied_on == ["neural_mapper_train"]  # cached, copied by the trainer
    core.run(lambda mm: mm.step(2))
    s2 = core.snapshot()
    assert s2 is s1 and len(copied_on) == 2 and s2.stats.steps == m.stats.steps == 2  # same object, refreshed
    for k, v in m.field.state_dict().items():
        assert torch.equal(v, s2.field.state_dict()[k])
    core.reset()
    with core.map_copy() as s3:
        assert s3 is not s1 and s3.stats.frames_added == 0  # a new lineage: a new copy


def test_snapshots_taken_meanwhile_leave_the_trainers_samples_unchanged(cores):
    frames, _ = sphere_frames(n=6, H=24, W=32)

    def train(with_snapshots: bool) -> dict:
        m = _small_mapper(frames)
        core = OnlineMapper(m, paused=True)  # steps only through jobs: a fixed number of them
        cores.append(core)
        core.start()
        done = threading.Event()
        snaps = []

        def copier():
            while not done.is_set():
                snaps.append(core.snapshot().stats.steps)

        t = threading.Thread(target=copier)
        if with_snapshots:
            t.start()
        torch.manual_seed(0)
        for _ in range(5):
            core.run(lambda mm: mm.step(1))
            if with_snapshots:
                core.snapshot()
        done.set()
        if with_snapshots:
            t.join()
            assert snaps
        core.stop()
        return {k: v.clone() for k, v in m.field.state_dict().items()}

    a, b = train(False), train(True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_out_of_memory_step_is_retried_with_half_the_rays_and_counted(cores):
    frames, _ = sphere_frames(n=2, H=24, W=32)
    m = _small_mapper(frames)
    real_loss = m.objective.loss
    sizes = []

    def loss(batch):  # the first try of each step runs out of memory; the retry at half the rays fits
        sizes.append(len(batch))
        if len(batch) > 128:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(batch)

    m.objective.loss = loss
    core = OnlineMapper(m)
    cores.append(core)
    core.start()
    _wait(lambda: m.stats.steps >= 2)
    core.stop()
    st = core.stats()
    assert sizes[:4] == [256, 128, 256, 128]
    assert st.oom_retries == sizes.count(256) >= 2 and st.last_error == ""
    assert m.cfg.train.rays_per_step == 256  # restored after each retried step
    assert m.stats.rays_trained == 128 * m.stats.steps


def test_other_runtime_errors_and_oom_at_the_smallest_batch_are_training_errors(cores):
    frames, _ = sphere_frames(n=2, H=24, W=32)
    for msg in ["shape mismatch", "CUDA out of memory"]:
        m = _small_mapper(frames)
        m.objective.loss = lambda batch, msg=msg: (_ for _ in ()).throw(RuntimeError(msg))
        core = OnlineMapper(m)
        cores.append(core)
        core.start()
        _wait(lambda: core.last_error != "")
        core.stop()
        assert msg in core.last_error and m.stats.steps == 0
        assert core.stats().oom_retries == (2 if "memory" in msg else 0)  # 256 -> 128 -> 64, then given up
        assert m.cfg.train.rays_per_step == 256


def test_rejected_frames_are_each_counted_and_warned_once_per_interval(caplog):
    """Mapper._reject goes through a WarnThrottle: 3 bursts of 40 rejects, the bursts one interval
    apart, give 3 warnings and an exact count of 120 (it logged all 120 before)."""
    m = Mapper(apply_overrides(MapperConfig(), SMALL))
    m.reject_warn = WarnThrottle(m.reject_warn._emit, lambda: 0.5)
    with caplog.at_level("WARNING", logger="neural_mapping.mapper"):
        for burst in range(3):
            if burst:
                time.sleep(0.6)
            for _ in range(40):
                assert m.add_frame("not a frame") is False
    warnings = [r for r in caplog.records if "frame rejected" in r.getMessage()]
    assert len(warnings) == 3, [r.getMessage() for r in warnings]
    assert "not a Frame: str" in warnings[0].getMessage() and "throttled" in warnings[0].getMessage()
    assert m.stats.frames_rejected == 120
    assert m.stats.reject_reasons == {"not a Frame: str": 120}


def test_reject_reasons_keep_at_most_max_reject_reasons_keys_and_count_every_frame():
    """Reasons carry figures ("only 12 depth pixels ..."): a stream of distinct ones must not grow the
    stats without bound; the first MAX_REJECT_REASONS - 1 are kept apart, the rest counted together."""
    from neural_mapping.mapper import MAX_REJECT_REASONS

    m = Mapper(apply_overrides(MapperConfig(), SMALL))
    for i in range(500):
        m._reject(f"only {i} depth pixels")
    m._reject("only 3 depth pixels")  # a reason kept apart is still counted under its own name
    r = m.stats.reject_reasons
    assert len(r) == MAX_REJECT_REASONS
    assert r["other reasons"] == 500 - (MAX_REJECT_REASONS - 1) and r["only 3 depth pixels"] == 2
    assert sum(r.values()) == m.stats.frames_rejected == 501
