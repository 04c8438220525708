"""TextGen-GuessNumber-v1: find a secret number from "higher"/"lower" replies, with its own bundled LM."""

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

SPAN = 50  # every game's range holds 50 numbers: low .. low + 49
LOWEST, HIGHEST_LOW = 1, 50  # where ranges start: 1 .. 50 (so numbers stay below 100: two digits)
MAX_TURNS = math.ceil(math.log2(SPAN + 1))  # 6: binary search always finds the number within this many
HELD_OUT_LOWS = 10
HELD_OUT_GAMES = 40
SPLITS = ("train", "test")


def range_starts(split: str = "train") -> list[int]:
    """Where a split's ranges start, by a fixed shuffle of 1..50: ``"test"`` holds 10, ``"train"`` the other 40.

    The split is over ranges, not secrets: every training range is played with every secret in it, so a policy
    cannot do well on training games by learning which numbers are secrets; it has to search. The held-out
    ranges are numbers it never searched."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}.")
    starts = list(range(LOWEST, HIGHEST_LOW + 1))
    random.Random(0).shuffle(starts)
    return sorted(starts[:HELD_OUT_LOWS] if split == "test" else starts[HELD_OUT_LOWS:])


def games(split: str = "train") -> list[tuple[int, int]]:
    """A split's games as ``(low, secret)``, the range being ``low .. low + 49``. ``"train"``: each of its 40
    ranges with each of its 50 secrets (2,000 games); ``"test"``: 40 games, four per held-out range, the secrets
    drawn once by a fixed seed."""
    if split == "test":
        rng = random.Random(1)
        return [(low, low + rng.randrange(SPAN)) for low in range_starts("test")
                for _ in range(HELD_OUT_GAMES // HELD_OUT_LOWS)]
    return [(low, low + offset) for low in range_starts("train") for offset in range(SPAN)]


def binary_search_turns(secret: int, low: int, high: int) -> int:
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

    ``reset(seed)`` plays the split's game ``seed mod len(split)`` (so seeds ``0 .. 39`` of ``"test"`` are its 40
    games once each): a range of 50 numbers, ``low`` to ``low + 49``, and a secret in it. The agent's turn is
    read for its first integer. A wrong guess gets ``"higher"`` or ``"lower"`` and the range the hints so far leave
    (``"higher, 38 to 62"``): a helpful host, so that the game's state is in its last reply and a small LM need
    not track every hint; the optimum is binary search all the same. A turn without a number in the range gets
    ``"a number from LOW to HIGH"`` and costs the turn. The right number pays 1.0 and ends the episode
    (``info["turns"]``: guesses used); after ``max_turns`` wrong guesses the episode ends with 0 (``terminated``:
    the game is lost, not cut short).
    """

    def __init__(self, split: str = "train", max_turns: int = MAX_TURNS):
        self.split, self.max_turns, self.games = split, max_turns, games(split)
        self.secret, self.turn = None, 0
        self.first = self.last = self.low = self.high = 0  # set by reset()

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        index = random.randrange(len(self.games)) if seed is None else seed % len(self.games)
        self.first, self.secret = self.games[index]
        self.last = self.first + SPAN - 1
        self.turn, self.low, self.high = 0, self.first, self.last
        return (f"Guess my number from {self.first} to {self.last} in {self.max_turns} tries.",
                {"secret": self.secret, "low": self.first, "high": self.last})

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
        if guess is None or not self.first <= guess <= self.last:
            return f"a number from {self.first} to {self.last}", 0.0, False, False, info
        if guess < self.secret:
            self.low = max(self.low, guess + 1)
        else:
            self.high = min(self.high, guess - 1)
        hint = "higher" if guess < self.secret else "lower"
        return f"{hint}, {self.low} to {self.high}", 0.0, False, False, info


class GuessNumberEnv(MultiTurnEnv):
    """
    ## Description

    Find a secret number in a range of 50 (``"from 13 to 62"``; ranges start anywhere from 1 to 50) in at most 6
    guesses, one guess per turn; the env answers each wrong guess with "higher" or "lower" and the range left
    ("higher, 38 to 62"). Multi-turn at the token level (:class:`lm_gym.MultiTurnEnv` over the
    :class:`GuessNumber` text env): the agent writes its guess and EOS, and the reply is appended in the same
    step. The optimum is known: binary search finds every number within 6 guesses (success 1.0; 4.86 guesses
    on average over a range's 50 numbers). The bundled LM (``scripts/build_guess_number_lm.py``) learned the
    format from an imperfect scripted player and succeeds on about 0.3 of the held-out games, so RL has room.

    ## Action Space

    ``Discrete(len(tokenizer))`` over the bundled LM's tokenizer.

    ## Observation Space

    TextGen-v0's ``Dict`` of ``input_ids`` / ``attention_mask``, ``Box(shape=(128,), dtype=int64)``: the whole game,
    e.g. ``"Guess my number from 13 to 62 in 6 tries.\\n37<eos>\\nhigher, 38 to 62\\n50<eos>\\n..."``.

    ## Rewards

    1.0 on the step that ends the turn with the right number; 0 otherwise.

    ## Starting State

    A game of the split: ``split="train"`` (40 ranges, each with each of its 50 secrets) or ``"test"`` (40 games
    on the other 10 ranges, held out); the text env's seed picks it (``reset(options={"text_env_seed": i})``: the
    split's i-th game).

    ## Episode End

    Terminated when the number is found or after 6 wrong guesses; an agent turn has at most 6 tokens.

    ## Arguments

    ``gym.make("TextGen-GuessNumber-v1", split="train", **multi_turn_env_kwargs)``.

    ## Version History

    * v1: (lm-gym 0.4) the ranges vary (50 numbers, 6 guesses) and the splits are over ranges, so a policy must
      search rather than fit the secrets; its bundled LM was rebuilt for it. Registered as v1 since lm-gym 0.5 (0.4
      shipped the new game under the v0 id); ``gym.make("TextGen-GuessNumber-v0")`` raises Gymnasium's
      ``DeprecatedEnv``, naming v1.
    * v0: Initial version (lm-gym 0.3): 1 to 100 and 7 guesses always, 80 training and 20 held-out secrets (which a
      policy could fit instead of searching). No longer available.
    """

    def __init__(self, split: str = "train", **kwargs: Any):
        super().__init__(**{**guess_number_defaults(split), **kwargs})


def guess_number_defaults(split: str = "train") -> dict[str, Any]:
    """The ``MultiTurnEnv`` arguments that make ``TextGen-GuessNumber-v1`` on ``split``."""
    return dict(text_env=functools.partial(GuessNumber, split), model=str(GUESS_NUMBER_MODEL), max_tokens=128,
                max_turn_tokens=6, max_turns=MAX_TURNS, reply_template="\n{reply}\n")
