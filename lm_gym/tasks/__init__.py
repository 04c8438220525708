"""The bundled multi-turn tasks: each a text env (GEM's API), its MultiTurnEnv and its own small LM."""

from lm_gym.tasks.guess_number import GUESS_NUMBER_MODEL, GuessNumber, GuessNumberEnv, binary_search_turns

__all__ = ["GUESS_NUMBER_MODEL", "GuessNumber", "GuessNumberEnv", "binary_search_turns"]
