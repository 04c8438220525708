"""Peers' environments as lm-gym envs: GEM envs by id, TextArena's single-player games, reasoning-gym datasets.

None of these packages is a dependency of lm-gym: each is imported only when its adapter is used
(``pip install 'lm-gym[gem]'``, ``'lm-gym[textarena]'``, ``'lm-gym[reasoning-gym]'``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from lm_gym.prompts import Prompt
from lm_gym.rewards import Reward, register_reward

EXTRAS = {"gem": "gem", "textarena": "textarena", "reasoning_gym": "reasoning-gym"}  # module -> extra


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this needs the {module!r} package: pip install 'lm-gym[{EXTRAS[module]}]' "
                          f"({error})") from error


def text_env_from_id(env_id: str):
    """``"gem:ID"`` -> ``gem.make(ID)``; ``"textarena:ID"`` -> :class:`TextArenaEnv` (a single-player game)."""
    prefix, _, name = env_id.partition(":")
    if prefix == "gem" and name:
        return _import("gem").make(name)
    if prefix == "textarena" and name:
        return TextArenaEnv(name)
    raise ValueError(f"text_env={env_id!r}: ids are 'gem:ID' (e.g. 'gem:game:GuessTheNumber-v0-easy') or "
                     "'textarena:ID' (e.g. 'textarena:GuessTheNumber-v0'); or pass a text env or a callable.")


class TextArenaEnv:
    """A single-player TextArena game with GEM's API, for :class:`lm_gym.MultiTurnEnv`.

    TextArena's API differs: ``reset(num_players, seed)``, ``get_observation() -> (player_id, text)`` where the text
    is the whole history so far, ``step(text) -> (done, info)``, and the rewards come from ``close()``. Here
    ``reset(seed)`` plays one player; each observation is only what is new since the last one (the token-level env
    keeps the history itself), without TextArena's echo of the agent's move; the reward is 0 until the game is
    done, then the player's reward from ``close()``, with ``terminated=True``.

    Args:
        env_id: a TextArena id, e.g. ``"GuessTheNumber-v0"`` (``textarena.make``).
    """

    def __init__(self, env_id: str):
        self.env_id = env_id
        self.env = _import("textarena").make(env_id)
        self._seen = ""

    def reset(self, seed: int | None = None) -> tuple[str, dict[str, Any]]:
        self.env.reset(num_players=1, seed=seed)
        return self._new_text(), {}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        done, info = self.env.step(action)
        if not done:
            return self._new_text(), 0.0, False, False, dict(info or {})
        rewards, game_info = self.env.close()
        return "", float((rewards or {}).get(0, 0.0)), True, False, {"game_info": game_info, **(info or {})}

    def _new_text(self) -> str:
        _, text = self.env.get_observation()
        new = text[len(self._seen):] if text.startswith(self._seen) else text
        self._seen = text
        lines = [line for line in new.split("\n") if not line.startswith("[Player]")]  # the agent's own move, echoed
        return "\n".join(lines).strip("\n")


def reasoning_gym_prompts(dataset: str, size: int = 500, seed: int = 0, **config: Any) -> list[Prompt]:
    """The questions of ``reasoning_gym.create_dataset(dataset, size=size, seed=seed, **config)`` as prompts (their
    answers as references), for a single-turn :class:`lm_gym.TextGenEnv` scored by ``reward="reasoning_gym"``."""
    items = _import("reasoning_gym").create_dataset(dataset, size=size, seed=seed, **config)
    return [Prompt(item["question"], (str(item["answer"]),)) for item in items]


class ReasoningGymReward(Reward):
    """A reasoning-gym dataset's own ``score_answer`` (1.0 for a correct answer; partial credit where the dataset
    gives it) for completions of its questions: ``reward="reasoning_gym"``, ``reward_kwargs={"dataset": ...,
    "size": ..., "seed": ...}`` (the same as :func:`reasoning_gym_prompts`). A prompt that is not one of the
    dataset's questions scores 0."""

    name = "reasoning_gym"

    def __init__(self, dataset: str, size: int = 500, seed: int = 0, **config: Any):
        self.data = _import("reasoning_gym").create_dataset(dataset, size=size, seed=seed, **config)
        self.entries = {item["question"]: item for item in self.data}

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 references: Sequence[Sequence[str]] | None = None) -> list[float]:
        scores = []
        for prompt, completion in zip(prompts, completions):
            entry = self.entries.get(prompt)
            scores.append(0.0 if entry is None else float(self.data.score_answer(answer=completion.strip(), entry=entry)))
        return scores


register_reward("reasoning_gym", ReasoningGymReward, overwrite=True)
