"""TextGen-Calculator-v0: products too hard to do in the head, with a calculator tool, and its own bundled LM."""

from __future__ import annotations

import functools
import random
import re
from typing import Any

from lm_gym.models import ASSETS_DIR
from lm_gym.multiturn import MultiTurnEnv

CALCULATOR_MODEL = ASSETS_DIR / "calculator-lm"
"""The bundled character-level GPT-2 that uses the tool, sometimes (built by ``scripts/build_calculator_lm.py``)."""

HELD_OUT_PROBLEMS = 200
MAX_TURNS = 3  # room for a second tool call before the answer
SPLITS = ("train", "test")
CALL = re.compile(r"<calc>(.*?)</calc>", re.DOTALL)
EXPRESSION = re.compile(r"\s*(\d{1,6})\s*([-+*])\s*(\d{1,6})\s*")
OPERATIONS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}


@functools.cache
def problems(split: str = "train") -> tuple[tuple[int, int], ...]:
    """Every ``a*b`` with ``100 <= a <= 999`` and ``10 <= b <= 99``, split by a fixed shuffle: ``"test"`` holds 200,
    ``"train"`` the other 80,800."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}.")
    pairs = [(a, b) for a in range(100, 1000) for b in range(10, 100)]
    random.Random(0).shuffle(pairs)
    return tuple(pairs[:HELD_OUT_PROBLEMS] if split == "test" else pairs[HELD_OUT_PROBLEMS:])


def calculate(expression: str) -> str:
    """The tool: ``"347*86"`` -> ``"29842"``; one ``+``, ``-`` or ``*`` between two integers, else ``"error"``."""
    match = EXPRESSION.fullmatch(expression)
    if match is None:
        return "error"
    a, operator, b = match.groups()
    return str(OPERATIONS[operator](int(a), int(b)))


def tool_use_turns(a: int, b: int) -> list[str]:
    """The optimal player's turns: call the tool on the problem, then copy its result."""
    return [f"<calc>{a}*{b}</calc>", calculate(f"{a}*{b}")]


class Calculator:
    """Products of a 3-digit and a 2-digit number as a text env (GEM's API), with a calculator tool.

    ``reset(seed)`` poses the split's problem ``seed mod len(split)`` as ``"347*86"``. A turn that contains
    ``<calc>EXPRESSION</calc>`` calls the tool: the reply is the value (``"29842"``, or ``"error"`` for anything but
    ``INT op INT`` with op one of ``+ - *``), and the episode goes on. Any other turn is the answer: its first
    integer is compared with the product, paying 1.0 when exact and ending the episode (``terminated``). A tool
    call on the last of ``max_turns`` turns ends the episode unanswered, with 0. ``info``: ``turns``,
    ``tool_calls``, ``answer`` (the integer read, or None), ``success``.
    """

    def __init__(self, split: str = "train", max_turns: int = MAX_TURNS):
        self.split, self.max_turns, self.problems = split, max_turns, problems(split)
        self.a = self.b = None
        self.turn = self.tool_calls = 0

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        index = random.randrange(len(self.problems)) if seed is None else seed % len(self.problems)
        (self.a, self.b), self.turn, self.tool_calls = self.problems[index], 0, 0
        return f"{self.a}*{self.b}", {"a": self.a, "b": self.b, "product": self.a * self.b}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.a is None:
            raise RuntimeError("step() before reset()")
        self.turn += 1
        call = CALL.search(action)
        if call is not None:
            self.tool_calls += 1
            info = {"turns": self.turn, "tool_calls": self.tool_calls, "answer": None, "success": False}
            if self.turn >= self.max_turns:
                return "no answer", 0.0, True, False, info
            return calculate(call.group(1)), 0.0, False, False, info
        match = re.search(r"-?\d+", action)
        answer = int(match.group()) if match else None
        success = answer == self.a * self.b
        info = {"turns": self.turn, "tool_calls": self.tool_calls, "answer": answer, "success": success}
        return ("correct" if success else f"wrong, it is {self.a * self.b}"), float(success), True, False, info


class CalculatorEnv(MultiTurnEnv):
    """
    ## Description

    Multiply a 3-digit by a 2-digit number (``"347*86"``) with a calculator tool, at the token level
    (:class:`lm_gym.MultiTurnEnv` over the :class:`Calculator` text env). The bundled LM cannot multiply in its
    head; it can write ``<calc>347*86</calc>``, read the env's reply (``29842``) and copy it as its answer. The
    optimum is known: call the tool on the problem and copy the result (success 1.0 on every problem,
    :func:`tool_use_turns`). The bundled LM (``scripts/build_calculator_lm.py``) learned from a scripted player that
    reaches for the tool only now and then and otherwise guesses, so RL has to discover that the tool pays.

    ## Action Space

    ``Discrete(len(tokenizer))`` over the bundled character tokenizer (digits, ``* + - = < > / c a l``, EOS, pad...).

    ## Observation Space

    TextGen-v0's ``Dict`` of ``input_ids`` / ``attention_mask``, ``Box(shape=(64,), dtype=int64)``: the whole
    exchange, e.g. ``"347*86\\n<calc>347*86</calc><eos>\\n29842\\n29842<eos>"``.

    ## Rewards

    1.0 on the step that ends the answer turn when the answer is the exact product; 0 otherwise.

    ## Starting State

    A problem of the split: ``split="train"`` (80,800 problems) or ``"test"`` (200 others, held out); the text env's
    seed picks it (``reset(options={"text_env_seed": i})``: the split's i-th problem).

    ## Episode End

    Terminated at the answer, or when the third turn is a tool call; an agent turn has at most 10 tokens
    (``<calc>999*99</calc>`` and EOS take 9), so a whole episode fits 30 agent tokens and a 64-step rollout.

    ## Arguments

    ``gym.make("TextGen-Calculator-v0", split="train", **multi_turn_env_kwargs)``.

    ## Version History

    * v0: Initial version (lm-gym 0.3).
    """

    def __init__(self, split: str = "train", **kwargs: Any):
        super().__init__(**{**calculator_defaults(split), **kwargs})


def calculator_defaults(split: str = "train") -> dict[str, Any]:
    """The ``MultiTurnEnv`` arguments that make ``TextGen-Calculator-v0`` on ``split``."""
    return dict(text_env=functools.partial(Calculator, split), model=str(CALCULATOR_MODEL), max_tokens=64,
                max_turn_tokens=10, max_turns=MAX_TURNS, reply_template="\n{reply}\n")
