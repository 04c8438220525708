"""What lm-gym's two vector envs (:class:`lm_gym.TextGenVecEnv`, :class:`lm_gym.MultiTurnVecEnv`) share: the template
env's configuration, group scheduling, seeded resets, token-action checks and the per-env methods behind
``env_method``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs


class TokenVecEnv(VecEnv):
    """The base of lm-gym's vector envs: one template env's configuration, group scheduling, seeded resets,
    token-action checks, and ``env_method`` for the per-env methods that SB3, sb3-contrib and lm-gym call
    (:data:`PER_ENV_METHODS`: ``action_masks`` for MaskablePPO, ``get_state`` / ``set_state`` for checkpoints,
    ``render``). Subclasses hold ``env`` (the template) and ``groups``, and define ``_start_episode(i, seed,
    options)``, ``_observations()`` and ``_env_<method>(i, ...)`` for each per-env method."""

    PER_ENV_METHODS = ("action_masks", "get_state", "set_state", "render")
    env: Any
    groups: GroupSchedule

    @staticmethod
    def template(env_class: type, num_envs: int, env: Any, group_size: int, env_kwargs: dict[str, Any]) -> Any:
        """The template env (``env``, or one built from ``env_kwargs``), after checking the arguments."""
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}: must be at least 1.")
        if not 1 <= group_size <= num_envs:
            raise ValueError(f"group_size={group_size}: must be between 1 and num_envs={num_envs}, so that a group's "
                             "episodes can run side by side; raise n_envs or lower group_size.")
        if env is not None and env_kwargs:
            raise ValueError(f"pass either env={env_class.__name__}(...) or the {env_class.__name__} arguments, not both.")
        return env.unwrapped if env is not None else env_class(**env_kwargs)

    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:
            self.groups.seed(self._seeds[0])
        for i in range(self.num_envs):
            self.reset_infos[i] = self._start_episode(i, self._seeds[i], self._options[i] or None)
        self._reset_seeds()
        self._reset_options()
        self.started = True
        return self._observations()

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = actions

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The template env's attribute, once per index: configuration is shared by all envs."""
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]  # no per-env wrappers: monitor with VecMonitor

    def _check_actions(self, actions: Any) -> np.ndarray:
        """``(num_envs,)`` int64 token ids, or the single env's error for the first bad one."""
        if not self.started:
            raise RuntimeError("step() called before reset(); call reset() first.")
        tokens = np.asarray(actions)
        if tokens.shape not in ((self.num_envs,), (self.num_envs, 1)) or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"actions: expected {self.num_envs} integer token ids (shape ({self.num_envs},)), got "
                             f"shape {tokens.shape} and dtype {tokens.dtype}.")
        tokens = tokens.reshape(self.num_envs).astype(np.int64, copy=False)
        bad = (tokens < 0) | (tokens >= self.action_space.n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.env.check_action(int(tokens[i]))  # raises the single env's error for that action
        return tokens


    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        if method_name not in self.PER_ENV_METHODS:
            raise AttributeError(f"{type(self).__name__}.env_method({method_name!r}): the per-env methods are "
                                 f"{list(self.PER_ENV_METHODS)}; call shared methods on the template env, "
                                 "venv.unwrapped.env.")
        method = getattr(self, f"_env_{method_name}")
        return [method(i, *method_args, **method_kwargs) for i in self._get_indices(indices)]


class GroupSchedule:
    """Hands out episode starts in groups: ``group_size`` consecutive starts share one draw (a prompt, or a text env's
    seed) and a group id."""

    def __init__(self, group_size: int):
        self.group_size = group_size
        self.rng = seeding.np_random()[0]
        self.next_id = 0  # id of the next group to open
        self.places_left = 0  # in the open group
        self.prompt: Any = None  # the open group's draw ("prompt" for checkpoints of lm-gym <= 0.2)

    def seed(self, seed: int) -> None:
        self.rng = seeding.np_random(seed)[0]

    def take(self, draw: Callable[[np.random.Generator], Any]) -> tuple[int, Any]:
        """The group id and the draw of the episode that starts now; ``draw(rng)`` opens a new group."""
        if self.places_left == 0:
            self.prompt = draw(self.rng)
            self.next_id += 1
            self.places_left = self.group_size
        self.places_left -= 1
        return self.next_id - 1, self.prompt

    def get_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "next_id": self.next_id, "places_left": self.places_left,
                "prompt": self.prompt}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.next_id, self.places_left, self.prompt = state["next_id"], state["places_left"], state["prompt"]
