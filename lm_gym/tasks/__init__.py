"""The bundled multi-turn tasks: each a text env (GEM's API), its MultiTurnEnv and its own small LM."""

from lm_gym.tasks.calculator import CALCULATOR_MODEL, Calculator, CalculatorEnv, tool_use_turns
from lm_gym.tasks.grid_world import GRID_WORLD_MODEL, GridWorld, GridWorldEnv, optimal_moves, optimal_return
from lm_gym.tasks.guess_number import GUESS_NUMBER_MODEL, GuessNumber, GuessNumberEnv, binary_search_turns

__all__ = ["CALCULATOR_MODEL", "Calculator", "CalculatorEnv", "GRID_WORLD_MODEL", "GridWorld", "GridWorldEnv",
           "GUESS_NUMBER_MODEL", "GuessNumber", "GuessNumberEnv", "binary_search_turns", "optimal_moves",
           "optimal_return", "tool_use_turns"]
