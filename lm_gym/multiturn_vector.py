"""MultiTurnVecEnv: ``num_envs`` multi-turn conversations in one SB3 VecEnv, replies encoded in one batch."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from lm_gym.env import Observation, append_token
from lm_gym.multiturn import HELD_OUT_SEEDS, MultiTurnEnv
from lm_gym.vector_base import GroupSchedule, TokenVecEnv


class MultiTurnVecEnv(TokenVecEnv):
    """``num_envs`` :class:`MultiTurnEnv` conversations stepped together.

    Every env's observation lives in one ``(num_envs, window)`` array: a step shifts all rows by the new tokens
    (array operations), and only the rows whose turn ended (or whose episode restarted) are rewritten. The envs
    whose turns end in the same step play their turns in their text envs one by one (they are independent
    Python objects) and have their replies encoded in one tokenizer call. Observations, rewards and episode
    ends are those of ``num_envs`` single envs in a ``DummyVecEnv`` seeded alike (``seed(s)``: env ``i`` gets
    ``s + i``); ``info`` is the single env's, plus ``terminal_observation`` on an episode's last step.

    **Groups** (``group_size=G > 1``, GRPO/RLOO): ``G`` consecutive episode starts share one text-env seed, so
    a group's episodes play the same task instance (the same secret number, the same puzzle) and their
    outcomes are comparable; ``info["group"]`` names the group, as in :class:`lm_gym.TextGenVecEnv`.

    Args:
        num_envs: parallel conversations.
        env: a ready :class:`MultiTurnEnv` to copy (each copy makes its own text env); else one is built from
            ``env_kwargs`` (:class:`MultiTurnEnv`'s arguments, ``text_env=...`` among them).
        group_size: episodes per group of one instance.
    """

    def __init__(self, num_envs: int, env: MultiTurnEnv | None = None, group_size: int = 1, **env_kwargs: Any):
        template = self.template(MultiTurnEnv, num_envs, env, group_size, env_kwargs)
        self.envs = [template] + [copy.copy(template) for _ in range(num_envs - 1)]
        self.env = template  # the shared configuration (get_attr reads it)
        super().__init__(num_envs, template.observation_space, template.action_space)
        self.input_ids = np.full((num_envs, template.window), template.pad_token_id, dtype=np.int64)
        self.attention_mask = np.zeros((num_envs, template.window), dtype=np.int64)
        self.group_size = group_size
        self.groups = GroupSchedule(group_size)
        self.episode_group = np.full(num_envs, -1, dtype=np.int64)
        self.actions: np.ndarray | None = None
        self.started = False

    # ----- the VecEnv API (reset, step_async, get_attr: TokenVecEnv's) -----

    def step_wait(self) -> VecEnvStepReturn:
        tokens = self._check_actions(self.actions)
        ended = [i for i, (env, token) in enumerate(zip(self.envs, tokens)) if env.add_agent_token(int(token))]
        ending = set(ended)
        append_token(self.input_ids, self.attention_mask, tokens)  # right for every row whose turn goes on
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        # Mid-turn envs' infos now; the envs whose turn ended get theirs from finish_turn below.
        infos: list[dict[str, Any]] = [{} if i in ending else env.step_info() for i, env in enumerate(self.envs)]
        turns = {i: self.envs[i].end_turn() for i in ended}  # each text env plays its turn
        replied = [i for i in ended if self.envs[i].wants_reply(turns[i])]
        reply_ids = dict(zip(replied, self.env.codec.replies([turns[i].reply for i in replied])))  # one call
        for i in ended:
            obs, rewards[i], terminated, truncated, infos[i] = self.envs[i].finish_turn(turns[i], reply_ids.get(i, []))
            self._write(i, obs)
            if terminated or truncated:
                dones[i] = True
                infos[i].update({"terminal_observation": obs, "TimeLimit.truncated": truncated and not terminated})
                if self.group_size > 1:
                    infos[i]["group"] = int(self.episode_group[i])
                self.reset_infos[i] = self._start_episode(i)
        return self._observations(), rewards, dones, infos

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._get_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [env.render() if env.render_mode == "rgb_array" else None for env in self.envs]

    # ----- the per-env methods behind env_method -----

    def _env_action_masks(self, i: int) -> np.ndarray:
        return self.envs[i].action_masks()

    def _env_get_state(self, i: int) -> dict[str, Any]:
        """Env ``i``'s conversation, text env and RNG (:meth:`MultiTurnEnv.get_state`), and the group schedule."""
        state = self.envs[i].get_state()
        if self.group_size > 1:  # the shared schedule rides along with every env's state
            state.update(group=int(self.episode_group[i]), groups=self.groups.get_state())
        return state

    def _env_set_state(self, i: int, state: dict[str, Any]) -> None:
        self.envs[i].set_state(state)
        if self.group_size > 1:
            self.episode_group[i] = state["group"]
            self.groups.set_state(state["groups"])
        self._write(i, self.envs[i]._observation())
        self.started = True

    def _env_render(self, i: int) -> str | np.ndarray | None:
        return self.envs[i].render()

    # ----- internals -----

    def _start_episode(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
        extra = {}
        if self.group_size > 1:
            self.episode_group[i], text_seed = self.groups.take(lambda rng: int(rng.integers(HELD_OUT_SEEDS)))
            options = {**(options or {}), "text_env_seed": text_seed}
            extra["group"] = int(self.episode_group[i])
        obs, info = self.envs[i].reset(seed=seed, options=options)
        self._write(i, obs)
        return {**info, **extra}

    def _write(self, i: int, obs: Observation) -> None:
        self.input_ids[i], self.attention_mask[i] = obs["input_ids"], obs["attention_mask"]

    def _observations(self) -> VecEnvObs:
        return {"input_ids": self.input_ids.copy(), "attention_mask": self.attention_mask.copy()}

