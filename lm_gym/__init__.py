"""lm-gym: RL fine-tuning of causal language models as a Gymnasium environment.

Importing the package registers ``"TextGen-v0"``, ``"TextGen-Arithmetic-v0"``, ``"TextGen-MultiTurn-v0"`` (any
text env, GEM's API, at the token level) and the multi-turn tasks ``"TextGen-GuessNumber-v1"``,
``"TextGen-Calculator-v0"`` and ``"TextGen-GridWorld-v0"``. :func:`suite` lists the tasks with a known optimum. In worker processes that
never import ``lm_gym`` (``SubprocVecEnv``), use the module-qualified id ``"lm_gym:TextGen-v0"``: gymnasium imports it first.
"""

from gymnasium.envs.registration import register, registry

from lm_gym.adapters import ReasoningGymReward, TextArenaEnv, reasoning_gym_prompts
from lm_gym.arithmetic import ARITHMETIC_MODEL, ArithmeticEnv, arithmetic_problems
from lm_gym.env import TextGenEnv
from lm_gym.models import DEFAULT_MODEL, load_causal_lm, load_tokenizer
from lm_gym.multiturn import MultiTurnEnv, TextEnv, make_text_env
from lm_gym.multiturn_vector import MultiTurnVecEnv
from lm_gym.prompts import DEFAULT_PROMPTS, HELDOUT_PROMPTS, Prompt, dataset_prompts, load_prompts, split_prompts
from lm_gym.rewards import (
    REWARDS,
    BleuReward,
    ClassifierReward,
    ExactMatchReward,
    FunctionReward,
    KeywordReward,
    LengthReward,
    RegexReward,
    Reward,
    RougeReward,
    SentimentReward,
    TargetWordReward,
    make_reward,
    register_reward,
)
from lm_gym.suite import SuiteTask, suite, suite_task
from lm_gym.tasks import (
    CALCULATOR_MODEL,
    GRID_WORLD_MODEL,
    GUESS_NUMBER_MODEL,
    Calculator,
    CalculatorEnv,
    GridWorld,
    GridWorldEnv,
    GuessNumber,
    GuessNumberEnv,
)
from lm_gym.turns import TurnCodec
from lm_gym.gymnasium_vector import TextGenVectorEnv
from lm_gym.vector import BatchedRewardVecEnv, TextGenVecEnv, make_vec_env

__version__ = "0.5.0"  # see CHANGELOG.md

# Every env id and its entry point; registered once even if the module is imported again.
ENV_IDS = {
    "TextGen-v0": "lm_gym.env:TextGenEnv",
    "TextGen-Arithmetic-v0": "lm_gym.arithmetic:ArithmeticEnv",
    "TextGen-MultiTurn-v0": "lm_gym.multiturn:MultiTurnEnv",
    "TextGen-GuessNumber-v1": "lm_gym.tasks.guess_number:GuessNumberEnv",
    "TextGen-Calculator-v0": "lm_gym.tasks.calculator:CalculatorEnv",
    "TextGen-GridWorld-v0": "lm_gym.tasks.grid_world:GridWorldEnv",
}
# gym.make_vec(..., vectorization_mode="vector_entry_point"): the single-turn envs' batched stepping.
VECTOR_ENTRY_POINTS = {
    "TextGen-v0": "lm_gym.gymnasium_vector:TextGenVectorEnv",
    "TextGen-Arithmetic-v0": "lm_gym.gymnasium_vector:arithmetic_vector_env",
}
for _env_id, _entry_point in ENV_IDS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, vector_entry_point=VECTOR_ENTRY_POINTS.get(_env_id))

__all__ = [
    "ARITHMETIC_MODEL", "ArithmeticEnv", "CALCULATOR_MODEL", "Calculator", "CalculatorEnv", "GRID_WORLD_MODEL",
    "GridWorld", "GridWorldEnv", "SuiteTask", "suite", "suite_task", "GUESS_NUMBER_MODEL", "GuessNumber", "GuessNumberEnv", "MultiTurnEnv", "MultiTurnVecEnv", "ReasoningGymReward", "TextArenaEnv",
    "TextEnv", "TextGenVectorEnv", "TurnCodec", "make_text_env", "reasoning_gym_prompts", "BatchedRewardVecEnv", "BleuReward", "ClassifierReward", "DEFAULT_MODEL",
    "DEFAULT_PROMPTS", "ExactMatchReward", "FunctionReward", "HELDOUT_PROMPTS", "KeywordReward", "LengthReward",
    "Prompt", "REWARDS", "RegexReward", "Reward", "RougeReward", "SentimentReward", "TargetWordReward", "TextGenEnv",
    "TextGenVecEnv", "arithmetic_problems", "dataset_prompts", "load_causal_lm", "load_prompts", "load_tokenizer",
    "make_reward", "make_vec_env", "register_reward", "split_prompts",
]
