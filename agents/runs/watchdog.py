"""Noticing a run that stopped making progress, instead of waiting on it forever.

A run can stall without failing: an RLlib env runner that never returns its samples (observed once in eight
runs on a fresh two-node cluster: 5.5 minutes at one step count, no message), a dead node whose actors Ray waits
to restart, a reward function or text env (a tool, a game server) that never answers. :class:`StallWatchdog`
watches the env-step count from a thread; when it has not moved for the limit, it stops the run with
:class:`TrainingStalled`, which names what the run was waiting for and the checkpoint to resume from.

The limit (``TrainConfig.stall_timeout``, seconds; 0 turns the watchdog off) defaults to ``max(120 s, 10 x the
longest wait seen so far)`` between env steps (SB3: between steps of a rollout; the update in between is not
counted) or between iterations (RLlib); until there is such a wait to go by, 600 s (model loading, actor
start-up, the first compilation).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

FIRST_LIMIT_S = 600.0
MIN_LIMIT_S = 120.0
FACTOR = 10.0
POLL_S = 1.0


class TrainingStalled(BaseException):
    """No env steps for ``waited_s`` seconds; ``what`` says what the run was waiting for, ``checkpoint`` where it
    can resume from (None: no checkpoint yet). A BaseException, as KeyboardInterrupt is: it arrives asynchronously,
    wherever the main thread waits, and no ``except Exception`` on the way (a reward's error wrapper) may swallow it."""

    def __init__(self, step: int, waited_s: float, limit_s: float, what: str, checkpoint: Path | None = None):
        self.step, self.waited_s, self.limit_s, self.what, self.checkpoint = step, waited_s, limit_s, what, checkpoint
        super().__init__(self._message())

    def _message(self) -> str:
        where = (f"; the last checkpoint is {self.checkpoint} (continue with: lm-gym train --resume "
                 f"{self.checkpoint.parent.parent})" if self.checkpoint else "; no checkpoint was written yet")
        return (f"training stalled at step {self.step}: no env steps for {self.waited_s:.0f} s (limit "
                f"{self.limit_s:.0f} s; stall_timeout sets it). Waiting for: {self.what}{where}.")

    def with_checkpoint(self, checkpoint: Path | None) -> TrainingStalled:
        return TrainingStalled(self.step, self.waited_s, self.limit_s, self.what, checkpoint)

    def __reduce__(self):  # copy and pickle by the fields (Ray's Trainable.train copies what passes through it)
        return TrainingStalled, (self.step, self.waited_s, self.limit_s, self.what, self.checkpoint)


class StallWatchdog:
    """Stops the run (in its main thread) when :meth:`beat` has not been called with a new step count for the
    limit. ``waiting_for()`` describes, when that happens, what the run waits on (called from the watchdog's
    thread). ``on_stall(error)`` delivers the error to the main thread (see :class:`agents.runs.interrupts.StopRequest`).

    Use: ``with StallWatchdog(...) as watchdog:`` around training; ``beat(steps)`` on progress; ``pause()`` /
    ``resume()`` around work that makes no env steps by design (an SB3 update).
    """

    def __init__(self, timeout_s: float | None, waiting_for: Callable[[], str],
                 on_stall: Callable[[TrainingStalled], None], steps: int = 0, poll_s: float = POLL_S):
        if timeout_s is not None and timeout_s < 0:
            raise ValueError(f"stall_timeout={timeout_s}: give seconds (> 0), 0 to turn the watchdog off, or None.")
        self.timeout_s, self.waiting_for, self.on_stall, self.poll_s = timeout_s, waiting_for, on_stall, poll_s
        self.steps, self.longest_wait = steps, None
        self.last = time.monotonic()
        self.paused = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def limit_s(self) -> float:
        if self.timeout_s:
            return self.timeout_s
        return FIRST_LIMIT_S if self.longest_wait is None else max(MIN_LIMIT_S, FACTOR * self.longest_wait)

    def beat(self, steps: int) -> None:
        """Progress: ``steps`` env steps so far."""
        if steps != self.steps:
            now = time.monotonic()
            wait = now - self.last
            self.longest_wait = wait if self.longest_wait is None else max(self.longest_wait, wait)
            self.steps, self.last = steps, now

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused, self.last = False, time.monotonic()

    def __enter__(self) -> StallWatchdog:
        self.last = time.monotonic()
        if self.timeout_s != 0:
            self._thread = threading.Thread(target=self._watch, name="lm-gym-stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._done.wait(self.poll_s):
            waited = time.monotonic() - self.last
            if not self.paused and waited > self.limit_s:
                self.on_stall(TrainingStalled(self.steps, waited, self.limit_s, self.waiting_for()))
                return


def interrupt_main_thread() -> None:
    """Wake the main thread out of whatever it waits in (``ray.get``, a socket, ``time.sleep``) with SIGINT, whose
    handler (StopRequest's) raises the stall there."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
