"""Vectorized TextGen-v0: one batched reward call for all episodes that finish in the same step."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from lm_gym.env import TextGenEnv
from lm_gym.rewards import Reward, score


class BatchedRewardVecEnv(VecEnvWrapper):
    """Scores every completion that ends in a step with a single call of the reward.

    The wrapped ``TextGenEnv``s defer their final score (``defer_reward=True``); ``step_wait`` sees all envs'
    results at once and fills in the rewards of the finished ones. A neural reward (``classifier``) then
    runs one batch per step instead of one forward per episode. Monitoring must sit outside this wrapper
    (``VecMonitor``): a ``Monitor`` inside would record the deferred zeros.

    Args:
        venv: a VecEnv of sparse-reward ``TextGenEnv``s.
        reward: the reward to call; default: the first env's (fetched once).
    """

    def __init__(self, venv: VecEnv, reward: Reward | None = None):
        if any(venv.env_is_wrapped(Monitor)):
            raise ValueError("BatchedRewardVecEnv: the envs are wrapped in Monitor, which would record the deferred "
                             "zero rewards. Build them without Monitor and put VecMonitor outside this wrapper.")
        if any(mode != "sparse" for mode in venv.get_attr("reward_mode")):
            raise ValueError("BatchedRewardVecEnv needs reward_mode='sparse': dense rewards are paid every step.")
        super().__init__(venv)
        self.reward = reward if reward is not None else venv.get_attr("reward", [0])[0]
        venv.set_attr("defer_reward", True)

    def reset(self):
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        pending = [i for i, info in enumerate(infos) if info.pop("pending_reward", False)]
        if pending:
            scores = score(self.reward, [infos[i]["prompt"] for i in pending],
                           [infos[i]["completion"] for i in pending], [infos[i]["references"] for i in pending])
            rewards = rewards.astype(np.float32, copy=True)
            rewards[pending] += scores
        return obs, rewards, dones, infos


def make_vec_env(n_envs: int = 8, seed: int | None = None, vec_env_cls: type[VecEnv] = DummyVecEnv,
                 **env_kwargs: Any) -> VecEnv:
    """``n_envs`` TextGen-v0 envs with batched sparse rewards and a ``VecMonitor`` (episode stats).

    Env ``i`` is seeded with ``seed + i`` at the first reset. Dense rewards skip the batching wrapper. In one
    process the envs are shallow copies of one ``TextGenEnv``: the prompts are tokenized and the reward (a
    classifier, say) is loaded once, not ``n_envs`` times, and ``reset()`` gives each copy its own episode
    state and RNG. Subprocess envs build their own.
    """
    if vec_env_cls is DummyVecEnv:
        template = TextGenEnv(**env_kwargs)
        venv = vec_env_cls([lambda: copy.copy(template) for _ in range(n_envs)])
    else:
        venv = vec_env_cls([lambda: TextGenEnv(**env_kwargs) for _ in range(n_envs)])
    if env_kwargs.get("reward_mode", "sparse") == "sparse":
        venv = BatchedRewardVecEnv(venv)
    if seed is not None:
        venv.seed(seed)
    return VecMonitor(venv)
