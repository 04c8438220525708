"""The task suite: every bundled task whose optimum is known exactly, so that an algorithm's score can be read as
a fraction of the best possible one (``lm-gym compare --suite``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from lm_gym.tasks.grid_world import layouts, optimal_return
from lm_gym.tasks.guess_number import SPAN, binary_search_turns, games


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite.

    ``metric`` says what the mean episode return measures on the held-out instances; ``optimum`` is the best mean
    return there (same scale), computed by ``solver``; ``optimum_detail`` adds what else the solver achieves.
    """

    env_id: str
    metric: str
    optimum: float
    solver: str
    optimum_detail: str = ""
    multi_turn: bool = False


@functools.cache
def _grid_world_optimum() -> float:
    return sum(optimal_return(layout) for layout in layouts("test")) / len(layouts("test"))


@functools.cache
def _binary_search_turns() -> float:
    held_out = games("test")
    return sum(binary_search_turns(secret, low, low + SPAN - 1) for low, secret in held_out) / len(held_out)


def suite() -> tuple[SuiteTask, ...]:
    """The suite, optima computed from the held-out instances of each task."""
    return (
        SuiteTask("TextGen-Arithmetic-v0", "exact-match accuracy", 1.0, "the answer itself"),
        SuiteTask("TextGen-GuessNumber-v1", "success", 1.0, "binary search",
                  f"{_binary_search_turns():.2f} guesses on average", multi_turn=True),
        SuiteTask("TextGen-Calculator-v0", "exact-match accuracy", 1.0, "call the tool, copy its result",
                  "2 turns", multi_turn=True),
        SuiteTask("TextGen-GridWorld-v0", "return (+1 goal, -0.05 a move)", _grid_world_optimum(),
                  "BFS shortest path", f"{(1 - _grid_world_optimum()) / 0.05:.2f} moves on average", multi_turn=True),
    )


def suite_task(env_id: str) -> SuiteTask | None:
    """The suite's entry for ``env_id``, or None (a task without a known optimum, such as TextGen-v0)."""
    return next((task for task in suite() if task.env_id == env_id), None)
