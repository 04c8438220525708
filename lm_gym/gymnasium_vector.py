"""Gymnasium's vector API over the batched stepping of :class:`lm_gym.TextGenVecEnv`.

``gym.make_vec("TextGen-v0", 8, vectorization_mode="vector_entry_point")`` builds a :class:`TextGenVectorEnv`:
what ``SyncVectorEnv`` of eight ``TextGenEnv`` gives (same observations, rewards, episode ends and infos for the
same seeds and actions), stepped with array operations and with one reward call per step, for consumers of
Gymnasium's vector API (TorchRL, CleanRL-style loops). SB3 takes :func:`lm_gym.make_vec_env` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lm_gym.env import TextGenEnv
from lm_gym.vector import TextGenVecEnv


class TextGenVectorEnv(VectorEnv):
    """``num_envs`` TextGen episodes as a ``gymnasium.vector.VectorEnv``.

    Autoreset is ``AutoresetMode.SAME_STEP``: an env whose episode ends in a step starts its next episode in
    that same step; the ended episode's last observation and info are in ``infos["final_obs"]`` and
    ``infos["final_info"]`` (masked by ``infos["_final_obs"]``), as ``SyncVectorEnv(...,
    autoreset_mode=AutoresetMode.SAME_STEP)`` reports them. ``reset(seed=s)`` seeds env ``i`` with ``s + i``.

    Args:
        num_envs: parallel episodes.
        env_class: :class:`TextGenEnv` or a subclass (``ArithmeticEnv``), built once from ``env_kwargs``.
        group_size: episodes per group of one prompt (see :class:`TextGenVecEnv`).
        **env_kwargs: the arguments of ``gym.make("TextGen-v0", ...)``.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["ansi", "rgb_array"]}

    def __init__(self, num_envs: int = 1, env_class: type[TextGenEnv] = TextGenEnv, group_size: int = 1,
                 **env_kwargs: Any):
        self.venv = TextGenVecEnv(num_envs, env=env_class(**env_kwargs), group_size=group_size)
        self.num_envs = num_envs
        self.single_observation_space = self.venv.observation_space
        self.single_action_space = self.venv.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = self.venv.env.render_mode

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed if isinstance(seed, int) else None)
        if isinstance(seed, int):
            self.venv.seed(seed)  # env i gets seed + i at the next reset
        elif seed is not None:
            self.venv._seeds = list(seed)  # what VecEnv.seed sets, one per env: SB3 has no public call for a list
        if options is not None:
            self.venv.set_options(options)
        observations = self.venv.reset()
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            infos = self._add_info(infos, self._running_info(i), i)
        return observations, infos

    def step(self, actions: np.ndarray):
        observations, rewards, dones, step_infos = self.venv.step(np.asarray(actions))
        infos: dict[str, Any] = {}
        for i, info in enumerate(step_infos):
            if dones[i]:
                final = {k: v for k, v in info.items() if k not in ("terminal_observation", "TimeLimit.truncated")}
                infos = self._add_info(infos, {"final_obs": info["terminal_observation"], "final_info": final}, i)
            infos = self._add_info(infos, self._running_info(i), i)
        # TextGen episodes always terminate (see TextGenEnv's "Episode End"); none is truncated.
        return (observations, rewards.astype(np.float64), dones.astype(bool), np.zeros(self.num_envs, dtype=bool),
                infos)

    def _running_info(self, i: int) -> dict[str, Any]:
        """Env ``i``'s info for the episode it is now in: ``TextGenEnv``'s keys, as before its last step."""
        info = {"prompt": self.venv.prompts[i].text, "completion": "", "num_new_tokens": int(self.venv.num_new_tokens[i])}
        if self.venv.group_size > 1:
            info["group"] = int(self.venv.episode_group[i])
        return info

    def render(self) -> tuple[Any, ...] | None:
        return tuple(self.venv.env_method("render"))

    def close_extras(self, **kwargs: Any) -> None:
        if hasattr(self, "venv"):  # not when the constructor failed
            self.venv.close()


def arithmetic_vector_env(num_envs: int = 1, **env_kwargs: Any) -> TextGenVectorEnv:
    """``TextGen-Arithmetic-v0``'s vector entry point."""
    from lm_gym.arithmetic import ArithmeticEnv

    return TextGenVectorEnv(num_envs, ArithmeticEnv, **env_kwargs)
