"""lm-gym: RL fine-tuning of causal language models as a Gymnasium environment.

Importing the package registers ``"TextGen-v0"``, ``"TextGen-Arithmetic-v0"``, ``"TextGen-MultiTurn-v0"`` (any
text env, GEM's API, at the token level) and the multi-turn tasks ``"TextGen-GuessNumber-v1"``,
``"TextGen-Calculator-v0"`` and ``"TextGen-GridWorld-v0"``. :func:`suite` lists the tasks with a known optimum.
In worker processes that never import ``lm_gym`` (``SubprocVecEnv``), use the module-qualified id
``"lm_gym:TextGen-v0"``: gymnasium imports it first.
"""

import importlib

from gymnasium.envs.registration import register, registry

__version__ = "0.6.0"  # see CHANGELOG.md

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

# The public API and the module that defines each name. They are imported on first use (PEP 562), so that
# ``import lm_gym`` registers the envs without loading torch and transformers (the CLI's --help answers at once).
EXPORTS = {
    "lm_gym.adapters": ["ReasoningGymReward", "TextArenaEnv", "reasoning_gym_prompts"],
    "lm_gym.arithmetic": ["ARITHMETIC_MODEL", "ArithmeticEnv", "arithmetic_problems"],
    "lm_gym.env": ["TextGenEnv"],
    "lm_gym.gymnasium_vector": ["TextGenVectorEnv"],
    "lm_gym.models": ["DEFAULT_MODEL", "load_causal_lm", "load_tokenizer"],
    "lm_gym.multiturn": ["MultiTurnEnv", "TextEnv", "make_text_env"],
    "lm_gym.multiturn_vector": ["MultiTurnVecEnv"],
    "lm_gym.prompts": ["DEFAULT_PROMPTS", "HELDOUT_PROMPTS", "Prompt", "dataset_prompts", "load_prompts",
                       "split_prompts"],
    "lm_gym.rewards": ["REWARDS", "BleuReward", "ClassifierReward", "ExactMatchReward", "FunctionReward",
                       "KeywordReward", "LengthReward", "RegexReward", "Reward", "RougeReward", "SentimentReward",
                       "TargetWordReward", "make_reward", "register_reward"],
    "lm_gym.task_suite": ["SuiteTask", "suite", "suite_task"],
    "lm_gym.tasks": ["CALCULATOR_MODEL", "GRID_WORLD_MODEL", "GUESS_NUMBER_MODEL", "Calculator", "CalculatorEnv",
                     "GridWorld", "GridWorldEnv", "GuessNumber", "GuessNumberEnv"],
    "lm_gym.turns": ["TurnCodec"],
    "lm_gym.vector": ["BatchedRewardVecEnv", "TextGenVecEnv", "make_vec_env"],
}
_MODULE_OF = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'lm_gym' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

