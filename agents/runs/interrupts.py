"""Stopping a run on SIGTERM or SIGINT without losing it, and saying so when saving fails.

SLURM, Kubernetes and ``timeout`` send SIGTERM some seconds before they kill; Ctrl-C sends SIGINT. While a run
trains, :class:`StopRequest` turns the first of either into a request that the backend honours at the next
rollout (SB3) or iteration (RLlib) boundary, where the state is consistent: it writes a checkpoint there and
raises :class:`TrainingInterrupted`, so ``lm-gym train --resume RUN`` continues exactly. A second signal stops at
once. Outside training (loading, held-out evaluation) a signal raises :class:`TrainingInterrupted` straight away.
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn

from agents.runs.watchdog import TrainingStalled, interrupt_main_thread

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class TrainingInterrupted(Exception):
    """A run stopped by a signal; ``checkpoint`` is where it can resume from (None: nothing written)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f" at step {step}" if step is not None else ""
        super().__init__(f"{signal.Signals(signum).name}{where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    def __reduce__(self):  # copy and pickle by the fields (Ray's Trainable.train copies what passes through it)
        return TrainingInterrupted, (self.signum, self.step, self.checkpoint)


def raised_by_signal(error: BaseException) -> TrainingInterrupted | TrainingStalled | None:
    """The stop (a signal's :class:`TrainingInterrupted`, the watchdog's :class:`TrainingStalled`) that ``error``
    wraps, if any. Raised from a signal handler inside a C extension's wait (``ray.wait``), it comes back as a
    ``SystemError`` caused by it, which RLlib's ``Algorithm.train`` wraps once more."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (TrainingInterrupted, TrainingStalled)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class StopRequest:
    """While active (``with StopRequest() as stop``), SIGINT/SIGTERM set ``stop.signum``; ``stop.deferring``
    says whether training will honour it at its next boundary (else the signal raises at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self.stalled: TrainingStalled | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        """True once a stop was requested: what the trainers poll."""
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def stall(self, error: TrainingStalled) -> None:
        """Raise ``error`` in the main thread (called by the stall watchdog's thread), out of whatever it waits in.
        A run trained outside the main thread has no handler there to turn the signal into ``error`` (the main
        thread would get a bare KeyboardInterrupt in whatever it does): it is told on stderr instead."""
        self.stalled = error
        if self._previous:
            interrupt_main_thread()
        else:
            sys.stderr.write(f"\nlm-gym: {error} (this run trains outside the main thread, so it cannot be stopped "
                             "from here: stop its thread or process.)\n")
            sys.stderr.flush()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stalled is not None:
            raise self.stalled
        if not self.deferring or self.signum is not None:
            raise TrainingInterrupted(signum)
        self.signum = signum
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the end of this rollout to write a "
                         "checkpoint (send it again to stop at once, without one).\n")
        sys.stderr.flush()


def stop_at(stop: StopRequest, step: int, directory: Path | None, save: Callable[[], object]) -> NoReturn:
    """Honour ``stop`` at a boundary where a checkpoint resumes exactly: ``save()`` the checkpoint of ``step`` into
    ``directory`` unless the periodic one already is that (None: write none), then raise TrainingInterrupted."""
    from agents.runs.checkpoints import checkpoint_at  # here: the CLI imports this module before it imports torch

    raise TrainingInterrupted(stop.signum, step, None if directory is None else checkpoint_at(directory, step, save))
