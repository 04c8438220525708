"""What watches a training run, whatever the backend: observers called as env steps accumulate.

An observer is ``observer(num_timesteps, returns)``: the env steps so far and the returns of the episodes that
finished since the last call. The SB3 trainer calls it every step, the RLlib trainer every iteration.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from stable_baselines3.common.callbacks import BaseCallback

Observer = Callable[[int, Sequence[float]], None]


class LearningCurve:
    """Every ``every`` env steps, records ``(steps, seconds, mean return of the episodes finished since)``."""

    def __init__(self, every: int):
        self.every = every
        self.points: list[tuple[int, float, float]] = []
        self._returns: list[float] = []
        self.start: float | None = None
        self.next_point = every

    def __call__(self, num_timesteps: int, returns: Sequence[float]) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        self._returns.extend(returns)
        if num_timesteps >= self.next_point and self._returns:
            self.points.append((num_timesteps, time.perf_counter() - self.start, float(np.mean(self._returns))))
            self._returns, self.next_point = [], num_timesteps + self.every


class LearningCurveCallback(BaseCallback):
    """The same record for a stock SB3 ``model.learn(callback=...)``; ``report(num_timesteps)`` shows progress."""

    def __init__(self, every: int, report: Callable[[int], None] | None = None):
        super().__init__()
        self.curve, self.report = LearningCurve(every), report

    @property
    def points(self) -> list[tuple[int, float, float]]:
        return self.curve.points

    def _on_step(self) -> bool:
        # VecMonitor puts {"r", "l", "t"} into the info of each env whose episode just ended.
        self.curve(self.num_timesteps, [float(info["episode"]["r"]) for info in self.locals["infos"] if "episode" in info])
        if self.report is not None:
            self.report(self.num_timesteps)
        return True


# Without a terminal (nohup, a batch job, CI) a live bar shows nothing until it ends: a plain line instead, whenever
# this share of the steps or this many seconds have passed since the last one.
PLAIN_LINE_FRACTION, PLAIN_LINE_SECONDS = 0.1, 60.0


@contextlib.contextmanager
def progress_bar(console: Console, total: int, done: int = 0, description: str = "training") -> Iterator[Observer]:
    """A progress bar over env steps, with the mean return of recent episodes; yields its observer. When the console
    is not a terminal, plain progress lines (:func:`progress_lines`) instead."""
    if not console.is_terminal:
        yield progress_lines(console, total, done, description)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[reward]}"))
    recent: list[float] = []
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=done, reward="")

        def observe(num_timesteps: int, returns: Sequence[float]) -> None:
            reward = recent_reward(recent, returns)
            progress.update(task, completed=min(num_timesteps, total), reward=reward)

        yield observe


def recent_reward(recent: list[float], returns: Sequence[float]) -> str:
    """The mean return of the last 100 episodes (``recent``, updated in place with ``returns``), as shown."""
    recent.extend(returns)
    del recent[:-100]
    return f"episode reward {np.mean(recent):+.3f}" if recent else ""


def progress_lines(console: Console, total: int, done: int = 0, description: str = "training",
                   clock: Callable[[], float] = time.monotonic) -> Observer:
    """An observer that prints ``training: 4096/49152 steps (8%), 37 s, ~6 min to go, episode reward +0.215`` every
    :data:`PLAIN_LINE_FRACTION` of the steps or :data:`PLAIN_LINE_SECONDS` seconds, and at the last step."""
    recent: list[float] = []
    start = clock()
    last = {"time": start, "steps": done}

    def observe(num_timesteps: int, returns: Sequence[float]) -> None:
        reward = recent_reward(recent, returns)
        if last["steps"] >= total:  # the last line is out (a rollout may run past the budget)
            return
        now = clock()
        finished = num_timesteps >= total
        if not finished and num_timesteps - last["steps"] < PLAIN_LINE_FRACTION * total \
                and now - last["time"] < PLAIN_LINE_SECONDS:
            return
        elapsed, rate = now - start, (num_timesteps - done) / max(now - start, 1e-9)
        seconds_left = (total - num_timesteps) / rate if rate > 0 else None
        to_go = "" if finished or seconds_left is None else \
            f", ~{seconds_left:.0f} s to go" if seconds_left < 120 else f", ~{seconds_left / 60:.0f} min to go"
        console.print(f"{description}: {min(num_timesteps, total)}/{total} steps ({num_timesteps / total:.0%}), "
                      f"{elapsed:.0f} s{to_go}" + (f", {reward}" if reward else ""), highlight=False)
        last.update(time=now, steps=num_timesteps)

    return observe


@contextlib.contextmanager
def episodes_bar(console: Console, total: int, description: str = "held-out") -> Iterator[Callable[[int], None]]:
    """A progress bar over held-out episodes; yields ``update(episodes_done)`` (``sample_episodes``' progress)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
