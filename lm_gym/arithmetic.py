"""TextGen-Arithmetic-v0: two-digit sums and differences with an exact answer, and its own bundled LM."""

from __future__ import annotations

import random
from typing import Any

from lm_gym.env import TextGenEnv
from lm_gym.models import ASSETS_DIR
from lm_gym.prompts import Prompt

ARITHMETIC_MODEL = ASSETS_DIR / "arithmetic-lm"
"""The bundled character-level GPT-2 that half knows arithmetic (built by ``scripts/build_arithmetic_lm.py``)."""

HELD_OUT_PROBLEMS = 500
SPLITS = ("train", "test")


def arithmetic_problems(split: str = "train") -> list[Prompt]:
    """Every ``a+b=`` and ``a-b=`` (``a >= b``) with ``0 <= a, b <= 99`` as a :class:`Prompt` whose reference is
    the answer, split by a fixed shuffle: ``"test"`` holds 500 problems, ``"train"`` the other 14,550.

    The bundled LM never saw a test problem, and RL trains on ``"train"`` only.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}.")
    problems = [(f"{a}+{b}=", str(a + b)) for a in range(100) for b in range(100)]
    problems += [(f"{a}-{b}=", str(a - b)) for a in range(100) for b in range(a + 1)]
    random.Random(0).shuffle(problems)
    chosen = problems[:HELD_OUT_PROBLEMS] if split == "test" else problems[HELD_OUT_PROBLEMS:]
    return [Prompt(question, (answer,)) for question, answer in chosen]


class ArithmeticEnv(TextGenEnv):
    """
    ## Description

    A small language model answers two-digit arithmetic problems (``"47+38="``, ``"90-13="``), one character
    token at a time, and is paid 1.0 for the exact answer. Unlike a lexicon or classifier score, the reward
    is verifiable and its optimum is known (1.0 on every problem), so algorithms can be compared on how
    close they get. The bundled LM answers about a third of the held-out problems right when sampling:
    it has learned the format and part of the carrying, and RL has something to find.

    ## Action Space

    ``Discrete(15)``: the bundled character tokenizer's ``0``-``9``, ``+``, ``-``, ``=``, EOS and pad.

    ## Observation Space

    As ``TextGen-v0``: ``Dict(input_ids, attention_mask)``, each ``Box(shape=(10,), dtype=int64)`` (up to 6
    prompt characters + 4 new tokens), left-padded.

    ## Rewards

    ``reward="exact_match"``: 1.0 when the completion, stripped of whitespace, is the answer, else 0.0, paid
    on the last step (sparse). Any other ``TextGen-v0`` reward can be passed instead.

    ## Starting State

    A problem drawn uniformly from the ``split``: ``"train"`` (14,550 problems) or ``"test"`` (500 held-out
    problems, never in the LM's pre-training nor in RL training).

    ## Episode End

    At EOS or after ``max_new_tokens=4`` tokens (the longest answer, ``198``, plus EOS).

    ## Arguments

    ```python
    gym.make("TextGen-Arithmetic-v0", split="train", **textgen_kwargs)
    ```

    * ``split``: ``"train"`` or ``"test"`` problems (``prompts=`` overrides it).
    * every other ``TextGen-v0`` argument, with the defaults ``model=ARITHMETIC_MODEL``,
      ``reward="exact_match"`` and ``max_new_tokens=4``.

    ## Version History

    * v0: Initial version (lm-gym 0.2).
    """

    def __init__(self, split: str = "train", **kwargs: Any):
        defaults = arithmetic_defaults()
        defaults["prompts"] = arithmetic_problems(split)
        super().__init__(**{**defaults, **kwargs})


def arithmetic_defaults() -> dict[str, Any]:
    """The ``TextGenEnv`` arguments that make ``TextGen-Arithmetic-v0`` (without its prompts)."""
    return dict(model=str(ARITHMETIC_MODEL), reward="exact_match", max_new_tokens=4)
