"""The online training core shared by the ROS node and ``neural-mapping map --realtime``.

One :class:`OnlineMapper` owns the live :class:`~neural_mapping.mapper.Mapper` and one
trainer thread. Producers ``put`` frames into a bounded drop-oldest queue and never wait;
the trainer alternates "integrate up to ``frames_per_step`` queued frames, one training
step", so fast input cannot starve training (the queue drops its oldest frames instead,
counted). Readers hand work to the trainer with :meth:`OnlineMapper.run` (queries, renders,
the products' map copy): it runs between two steps, on the trainer thread. Pause, reset and
swapping in a loaded map also happen between steps. No rclpy here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue as queue_mod
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TypeVar

from neural_mapping.frame import Frame, FrameError
from neural_mapping.frame_queue import DropOldestQueue

if TYPE_CHECKING:  # torch is imported by whoever builds the Mapper (the node sets OpenMP's policy first)
    from neural_mapping.mapper import Mapper

log = logging.getLogger(__name__)

R = TypeVar("R")
#: longest the trainer holds its next step for readers inside :meth:`OnlineMapper.reading` (s)
READER_HOLD_S = 2.0
#: fewest rays a training step is retried with after an out-of-memory error
MIN_OOM_RAYS = 64


class WarnThrottle:
    """``warn(kind, msg)``: emits ``msg`` at most once per ``interval_s()`` seconds per ``kind``."""

    def __init__(self, emit: Callable[[str], None], interval_s: Callable[[], float] = lambda: 5.0) -> None:
        self._emit = emit
        self._interval_s = interval_s
        self._last: dict[str, float] = {}

    def __call__(self, kind: str, msg: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self._interval_s():
            self._last[kind] = now
            self._emit(f"{msg} (counted as {kind}; further ones throttled)")


@dataclass
class OnlineStats:
    frames_received: int  # frames put
    frames_integrated: int  # frames handed to Mapper.add_frame (it may still reject them: Mapper.stats)
    dropped_queue_full: int  # evicted from the full queue (training slower than input)
    dropped_paused: int  # taken from the queue while paused
    dropped_refused: int  # Mapper.add_frame raised on them
    queue_length: int
    steps: int
    steps_per_s: float  # over the last rate_window_s
    oom_retries: int  # steps retried at half the rays after an out-of-memory error (see _step)
    last_error: str  # the last training error ("" when none since start or reset)
    state: str  # "error: ...", "paused", "waiting for frames" or "mapping"


class OnlineMapper:
    """A Mapper trained online by one trainer thread (see the module doc)."""

    def __init__(self, mapper: Mapper, *, queue_size: int = 8, frames_per_step: int = 1, paused: bool = False,
                 rate_window_s: float = 5.0, on_warning: Callable[[str, str], None] | None = None) -> None:
        if int(frames_per_step) < 1:
            raise ValueError(f"frames_per_step must be >= 1, got {frames_per_step}")
        self.mapper = mapper  # the live map; replaced only through swap()
        self.queue: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        self.frames_per_step = int(frames_per_step)
        self.rate_window_s = float(rate_window_s)
        self._warn = on_warning or WarnThrottle(log.warning)
        self.lineage = 0  # incremented by reset and swap: a new map
        self.last_error = ""
        self.latest_frame: Frame | None = None  # the last frame integrated (the node renders from its camera)
        self._paused = bool(paused)
        self._nothing_to_train = False  # the last step found no keyframe (a loaded map): wait for a frame
        self._state_lock = threading.Lock()  # paused vs. the trainer starting a busy section
        self._idle = threading.Event()  # set while the trainer neither integrates nor steps
        self._idle.set()
        self._stop = threading.Event()
        self._jobs: queue_mod.SimpleQueue = queue_mod.SimpleQueue()  # (fn, Future) run by the trainer
        self._job_ready = threading.Event()
        self._readers = 0
        self._readers_lock = threading.Lock()
        self._step_times: deque[tuple[float, int]] = deque()
        self._counts = {"integrated": 0, "paused": 0, "refused": 0, "resolved": 0, "cleared": 0, "oom": 0}
        self._drained = threading.Condition()
        self._snap: Mapper | None = None
        self._snap_key: tuple | None = None
        self._snap_lock = threading.RLock()  # held while the map copy is refreshed or used (map_copy)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the trainer thread (once; a stopped core does not start again)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="neural_mapper_train", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the trainer between two steps; True when it has ended within ``timeout`` s.

        Idempotent, and safe from a signal handler or from the trainer itself (then it does not wait).
        """
        self._stop.set()
        self._job_ready.set()
        self.queue.close()
        t = self._thread
        if t is None or t is threading.current_thread():
            return t is None
        t.join(timeout=timeout)
        return not t.is_alive()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (jobs such as a render band check it to end early)."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ input

    def put(self, frame: Frame) -> bool:
        """Queue a frame for the trainer; True when an older frame was dropped for it (counted)."""
        return self.queue.put(frame) is not None

    def wait_until_drained(self, timeout: float) -> bool:
        """True once every frame put so far was dropped or integrated and trained on once (the
        step that follows its integration has run); False after ``timeout`` s."""
        t_end = time.monotonic() + timeout
        with self._drained:
            while not self._is_drained():
                left = t_end - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(min(left, 0.05))  # put() does not notify: poll the queue's counters
        return True

    def _is_drained(self) -> bool:
        q, c = self.queue, self._counts
        return q.put_count == q.dropped + c["resolved"] + c["cleared"]

    # ------------------------------------------------------------------ jobs

    def run(self, fn: Callable[[Mapper], R]) -> R:
        """``fn(mapper)`` run on the trainer thread between two steps; returns its result or raises
        what it raised. Runs inline when called from the trainer or while no trainer runs.

        Torch's OpenMP worker threads belong to the thread that starts a parallel region, and
        with ``OMP_WAIT_POLICY=ACTIVE`` (set by the ROS node) a thread's workers keep spinning after
        its last region: measured in one process on 2 cores, a 100 k query with gradients took
        112 ms in a second thread against 71 ms in the thread whose team was warm. The trainer
        runs the job between two steps instead, with its own workers; the live map's lock is
        then never fought over.
        """
        t = self._thread
        if t is None or t is threading.current_thread() or not t.is_alive():
            return fn(self.mapper)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        self._job_ready.set()
        self.queue.interrupt()  # the trainer may be waiting for a frame
        while True:
            try:
                return fut.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if not t.is_alive() and fut.cancel():  # stopped before taking it
                    return fn(self.mapper)

    @contextlib.contextmanager
    def reading(self):
        """Context of a reader about to hand jobs (a service call): the trainer runs jobs and starts
        no step while any reader is inside (at most :data:`READER_HOLD_S`), so the job does not
        wait for a whole step."""
        with self._readers_lock:
            self._readers += 1
        try:
            yield
        finally:
            with self._readers_lock:
                self._readers -= 1

    def _run_jobs(self) -> bool:
        """Run the jobs other threads handed over (see run); True if any ran."""
        self._job_ready.clear()
        ran = False
        while True:
            try:
                fn, fut = self._jobs.get_nowait()
            except queue_mod.Empty:
                return ran
            ran = True
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(self.mapper))
                except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
                    fut.set_exception(e)

    # ------------------------------------------------------------------ control

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool, wait_s: float = 0.0) -> bool:
        """Pause (frames taken meanwhile are counted as dropped_paused) or resume training.
        True when the trainer is idle (no frame being integrated, no step running) within ``wait_s``."""
        with self._state_lock:
            self._paused = bool(paused)
        return self._idle.wait(timeout=wait_s) if wait_s > 0 else self._idle.is_set()

    def reset(self) -> None:
        """Forget the map (Mapper.reset) between two steps: a new lineage, the queue cleared."""
        self.run(self._reset_on_trainer)

    def swap(self, mapper: Mapper) -> None:
        """Replace the live map (e.g. a loaded one) between two steps: a new lineage, the queue cleared."""
        self.run(lambda _old: self._new_lineage(mapper))

    def _reset_on_trainer(self, mapper: Mapper) -> None:
        mapper.reset()
        self._new_lineage(mapper)

    def _new_lineage(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self._nothing_to_train = False
        self._counts["cleared"] += self.queue.clear()
        self._step_times.clear()
        self.last_error = ""
        self.latest_frame = None
        self.lineage += 1

    # ------------------------------------------------------------------ the map copy

    def snapshot(self) -> Mapper:
        """The products' copy of the map, refreshed when a step or a frame changed the map.

        Cached per (lineage, steps, frames_added); refreshed in place (``Mapper.snapshot(into=...)``
        reuses its modules and it stays one object, so a mesh extractor kept on it keeps its tile
        cache) while the lineage holds. Copied on the trainer (:meth:`run`), between two steps.
        Use :meth:`map_copy` when other threads may refresh it while you read it. Not from a job
        (the caller may hold the copy's lock while it waits for the trainer).
        """
        with self._snap_lock:
            m = self.mapper
            if self._snap is not None and self._snap_key == (self.lineage, m.stats.steps, m.stats.frames_added):
                return self._snap

            def copy(mapper: Mapper):
                key = (self.lineage, mapper.stats.steps, mapper.stats.frames_added)
                same_lineage = self._snap is not None and self._snap_key[0] == key[0]
                return key, mapper.snapshot(into=self._snap if same_lineage else None)

            self._snap_key, self._snap = self.run(copy)
            return self._snap

    @contextlib.contextmanager
    def map_copy(self):
        """``with core.map_copy() as snap:`` the snapshot, not refreshed by others meanwhile."""
        with self._snap_lock:
            yield self.snapshot()

    # ------------------------------------------------------------------ statistics

    def steps_per_s(self) -> float:
        st = list(self._step_times)
        if len(st) < 2:
            return 0.0
        (t0, s0), (t1, s1) = st[0], st[-1]
        return (s1 - s0) / max(t1 - t0, 1e-6)

    def stats(self) -> OnlineStats:
        m, c, q = self.mapper, self._counts, self.queue
        if self.last_error:
            state = "error: " + self.last_error
        elif self._paused:
            state = "paused"
        elif m.stats.frames_added == 0:
            state = "waiting for frames"
        else:
            state = "mapping"
        return OnlineStats(frames_received=q.put_count, frames_integrated=c["integrated"],
                           dropped_queue_full=q.dropped, dropped_paused=c["paused"], dropped_refused=c["refused"],
                           queue_length=len(q), steps=int(m.stats.steps), steps_per_s=self.steps_per_s(),
                           oom_retries=c["oom"],
                           last_error=self.last_error, state=state)

    # ------------------------------------------------------------------ the trainer

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._run_jobs()
                self._train_once()
            except Exception as e:  # noqa: BLE001 - report, keep training
                self.last_error = f"training: {type(e).__name__}: {e}"
                self._warn("error_training", f"training failed: {e}\n{traceback.format_exc()}")
                self._idle.set()
                self._stop.wait(0.5)
        self._run_jobs()  # answer what was handed over before the stop

    def _can_step(self) -> bool:
        return not self._paused and not self._nothing_to_train and self.mapper.stats.frames_added > 0

    def _train_once(self) -> None:
        t_end = time.monotonic() + READER_HOLD_S
        while self._readers > 0 and time.monotonic() < t_end and not self._stop.is_set():
            if not self._run_jobs():  # let readers hand their jobs before the next step
                self._job_ready.wait(0.002)
        frame = self.queue.get(timeout=0.0 if self._can_step() else 0.1)
        with self._state_lock:
            busy = not self._paused and (frame is not None or self._can_step())
            if busy:
                self._idle.clear()
        if not busy:
            self._idle.set()
            n = 0
            while frame is not None:  # paused: every waiting frame is dropped, counted
                self._counts["paused"] += 1
                n += 1
                frame = self.queue.get_nowait()
            self._resolve(n)
            if self._paused:
                self._job_ready.wait(0.02)
            return
        n = 0
        try:
            # at most frames_per_step frames between two steps, so fast input cannot starve training
            # (the bounded queue then drops the oldest frames, counted)
            while frame is not None:
                self._integrate(frame)
                n += 1
                frame = self.queue.get_nowait() if n < self.frames_per_step else None
            if self._can_step() and not self._stop.is_set():
                # a loaded map has frames but no keyframes to train on: wait for a frame, do not spin
                self._nothing_to_train = self._step().rays == 0
                now = time.monotonic()
                self._step_times.append((now, self.mapper.stats.steps))
                while self._step_times and now - self._step_times[0][0] > self.rate_window_s:
                    self._step_times.popleft()
        finally:
            self._idle.set()
            self._resolve(n)

    def _step(self):
        """One ``Mapper.step``; on an out-of-memory error (``torch.cuda.OutOfMemoryError`` is a
        RuntimeError saying "out of memory") the step is retried with half the rays, down to
        :data:`MIN_OOM_RAYS`, counted in ``oom_retries``; ``train.rays_per_step`` is restored after."""
        rays = None
        try:
            while True:
                try:
                    return self.mapper.step(1)
                except RuntimeError as e:
                    train = self.mapper.cfg.train if "out of memory" in str(e) else None
                    if train is None or train.rays_per_step // 2 < MIN_OOM_RAYS:
                        raise
                    rays = train.rays_per_step if rays is None else rays
                    torch = sys.modules.get("torch")
                    if torch is not None and torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    self._counts["oom"] += 1
                    train.rays_per_step //= 2
                    self._warn("oom_retries", f"out of memory in a training step: retried with "
                                              f"{train.rays_per_step} rays ({e})")
        finally:
            if rays is not None:
                self.mapper.cfg.train.rays_per_step = rays

    def _integrate(self, frame: Frame) -> None:
        try:
            self.mapper.add_frame(frame)
        except (FrameError, ValueError) as e:
            self._counts["refused"] += 1
            self._warn("dropped_refused", f"the mapper refused a frame: {e}")
            return
        self._counts["integrated"] += 1
        self._nothing_to_train = False
        self.latest_frame = frame

    def _resolve(self, n: int) -> None:
        if n:
            with self._drained:
                self._counts["resolved"] += n
                self._drained.notify_all()
