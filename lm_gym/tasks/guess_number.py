"""TextGen-GuessNumber-v0: find a secret number from "higher"/"lower" replies, with its own bundled LM."""

from __future__ import annotations

import functools
import math
import random
import re
from typing import Any

from lm_gym.models import ASSETS_DIR
from lm_gym.multiturn import MultiTurnEnv

GUESS_NUMBER_MODEL = ASSETS_DIR / "guess-number-lm"
"""The bundled GPT-2 that plays the game, imperfectly (built by ``scripts/build_guess_number_lm.py``); it also
knows the format of GEM's ``game:GuessTheNumber-v0-easy``."""

LOW, HIGH = 1, 100
MAX_TURNS = math.ceil(math.log2(HIGH - LOW + 2))  # 7: binary search always finds the number within this many
HELD_OUT_SECRETS = 20
SPLITS = ("train", "test")


def secrets(split: str = "train") -> list[int]:
    """The secret numbers of a split, by a fixed shuffle of 1..100: ``"test"`` holds 20, ``"train"`` the other 80."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}.")
    numbers = list(range(LOW, HIGH + 1))
    random.Random(0).shuffle(numbers)
    return sorted(numbers[:HELD_OUT_SECRETS] if split == "test" else numbers[HELD_OUT_SECRETS:])


def binary_search_turns(secret: int, low: int = LOW, high: int = HIGH) -> int:
    """Guesses the optimal player (the midpoint of what is left, rounded down) needs to find ``secret``."""
    turns = 0
    while True:
        turns += 1
        guess = (low + high) // 2
        if guess == secret:
            return turns
        low, high = (guess + 1, high) if guess < secret else (low, guess - 1)


class GuessNumber:
    """The game as a text env (GEM's API): one secret per episode, ``max_turns`` guesses to find it.

    ``reset(seed)`` picks the split's secret number ``seed mod len(split)`` (so seeds ``0 .. 19`` of ``"test"`` are its
    20 secrets once each). The agent's turn is read for its first integer. A wrong guess gets ``"higher"`` or
    ``"lower"`` and the range the hints so far leave (``"higher, 51 to 100"``): a helpful host, so that the game's
    state is in its last reply and a small LM need not track every hint; the optimum is binary search all the
    same. A turn without a number from 1 to 100 gets ``"a number from 1 to 100"`` and costs the turn. The right
    number pays 1.0 and ends the episode (``info["turns"]``: guesses used); after ``max_turns`` wrong guesses the
    episode ends with 0 (``terminated``: the game is lost, not cut short).
    """

    def __init__(self, split: str = "train", max_turns: int = MAX_TURNS):
        self.split, self.max_turns, self.secrets = split, max_turns, secrets(split)
        self.secret, self.turn, self.low, self.high = None, 0, LOW, HIGH

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        index = random.randrange(len(self.secrets)) if seed is None else seed % len(self.secrets)
        self.secret, self.turn, self.low, self.high = self.secrets[index], 0, LOW, HIGH
        return f"Guess my number from {LOW} to {HIGH} in {self.max_turns} tries.", {"secret": self.secret}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.secret is None:
            raise RuntimeError("step() before reset()")
        self.turn += 1
        match = re.search(r"-?\d+", action)
        guess = int(match.group()) if match else None
        info = {"turns": self.turn, "guess": guess, "success": guess == self.secret}
        if guess == self.secret:
            return "correct", 1.0, True, False, info
        if self.turn >= self.max_turns:
            return f"no, it was {self.secret}", 0.0, True, False, info
        if guess is None or not LOW <= guess <= HIGH:
            return f"a number from {LOW} to {HIGH}", 0.0, False, False, info
        if guess < self.secret:
            self.low = max(self.low, guess + 1)
        else:
            self.high = min(self.high, guess - 1)
        hint = "higher" if guess < self.secret else "lower"
        return f"{hint}, {self.low} to {self.high}", 0.0, False, False, info


class GuessNumberEnv(MultiTurnEnv):
    """
    ## Description

    Find a secret number from 1 to 100 in at most 7 guesses, one guess per turn; the env answers each wrong
    guess with "higher" or "lower" and the range left ("higher, 51 to 100"). Multi-turn at the token level (:class:`lm_gym.MultiTurnEnv` over the
    :class:`GuessNumber` text env): the agent writes its guess and EOS, and the reply is appended in the same
    step. The optimum is known: binary search finds every number within 7 guesses (success 1.0; 5.8 guesses on
    average over the 100 numbers, 5.95 over the 20 held-out ones). The bundled LM
    (``scripts/build_guess_number_lm.py``) learned the format from an imperfect scripted player and succeeds on
    about 0.3 of the held-out games, so RL has room.

    ## Action Space

    ``Discrete(len(tokenizer))`` over the bundled LM's tokenizer.

    ## Observation Space

    TextGen-v0's ``Dict`` of ``input_ids`` / ``attention_mask``, ``Box(shape=(128,), dtype=int64)``: the whole game,
    e.g. ``"Guess my number from 1 to 100 in 7 tries.\\n50<eos>\\nhigher, 51 to 100\\n75<eos>\\n..."``.

    ## Rewards

    1.0 on the step that ends the turn with the right number; 0 otherwise.

    ## Starting State

    A secret number of the split: ``split="train"`` (80 numbers) or ``"test"`` (the other 20, held out); the text
    env's seed picks it (``reset(options={"text_env_seed": i})``: the split's i-th number).

    ## Episode End

    Terminated when the number is found or after 7 wrong guesses; an agent turn has at most 6 tokens.

    ## Arguments

    ``gym.make("TextGen-GuessNumber-v0", split="train", **multi_turn_env_kwargs)``.

    ## Version History

    * v0: Initial version (lm-gym 0.3).
    """

    def __init__(self, split: str = "train", **kwargs: Any):
        super().__init__(**{**guess_number_defaults(split), **kwargs})


def guess_number_defaults(split: str = "train") -> dict[str, Any]:
    """The ``MultiTurnEnv`` arguments that make ``TextGen-GuessNumber-v0`` on ``split``."""
    return dict(text_env=functools.partial(GuessNumber, split), model=str(GUESS_NUMBER_MODEL), max_tokens=128,
                max_turn_tokens=6, max_turns=MAX_TURNS, reply_template="\n{reply}\n")
