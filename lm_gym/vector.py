"""Vectorized TextGen-v0: :class:`TextGenVecEnv` steps all envs with array operations; ``make_vec_env`` builds it.

:class:`BatchedRewardVecEnv` keeps one batched reward call per step for VecEnvs of single ``TextGenEnv``s
(``SubprocVecEnv``, ``DummyVecEnv``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from lm_gym.env import Observation, TextGenEnv, append_token, place_prompt, render_text
from lm_gym.prompts import Prompt
from lm_gym.rewards import Reward, score
from lm_gym.vector_base import GroupSchedule, TokenVecEnv


class TextGenVecEnv(TokenVecEnv):
    """``num_envs`` TextGen-v0 episodes in one SB3 ``VecEnv``, stepped with array operations.

    Every env's ``input_ids`` and ``attention_mask`` live in one ``(num_envs, window)`` array; a step shifts
    them all by one column and writes the new tokens. Completions are decoded only when an episode ends (or
    when ``render`` asks), and every episode that ends in a step is scored in one call of the reward.
    Observations, rewards and episode boundaries are the same as those of ``num_envs`` :class:`TextGenEnv`
    in a ``DummyVecEnv`` seeded alike (``seed(s)`` seeds env ``i`` with ``s + i``); ``info`` is ``{}`` while
    an episode runs and ``{"prompt", "completion", "num_new_tokens", "terminal_observation"}`` on its last
    step. Finished envs restart at once, as in every SB3 VecEnv.

    **Groups** (``group_size=G > 1``, for GRPO/RLOO-style baselines): episodes come in groups of ``G`` that
    answer the same prompt. Every episode that starts takes the next free place in the open group; once
    ``G`` episodes have started, the next one opens a new group with a new prompt (drawn from one stream for
    the whole VecEnv, seeded by ``seed(s)`` with ``s``). So a group's episodes run side by side in ``G``
    different envs, start within a few steps of each other, and ``n_envs`` needs no relation to ``G``. Each
    episode's group id is in ``info["group"]`` on its last step (and in the reset info).

    ``env_method`` serves the per-env methods of ``TextGenEnv`` that SB3, sb3-contrib and lm-gym call:
    ``action_masks`` (MaskablePPO), ``get_state`` / ``set_state`` (checkpoints) and ``render``; ``get_attr``
    returns the shared template's attributes (``tokenizer``, ``reward``, ``window``, ...).

    Args:
        num_envs: number of parallel episodes.
        env: a ready :class:`TextGenEnv` to take the tokenizer, prompts, reward and spaces from; else one
            is built from ``env_kwargs`` (the same arguments as ``gym.make("TextGen-v0", ...)``).
        group_size: episodes per group of one prompt (1: every episode draws its own prompt).
    """

    def __init__(self, num_envs: int, env: TextGenEnv | None = None, group_size: int = 1, **env_kwargs: Any):
        self.env = self.template(TextGenEnv, num_envs, env, group_size, env_kwargs)
        super().__init__(num_envs, self.env.observation_space, self.env.action_space)
        n, template = num_envs, self.env
        self.input_ids = np.full((n, template.window), template.pad_token_id, dtype=np.int64)
        self.attention_mask = np.zeros((n, template.window), dtype=np.int64)
        self.new_ids = np.zeros((n, template.max_new_tokens), dtype=np.int64)  # generated tokens, left-aligned
        self.num_new_tokens = np.zeros(n, dtype=np.int64)
        self.last_score = np.zeros(n, dtype=np.float64)  # dense rewards pay score changes
        self.prompts: list[Prompt | None] = [None] * n
        self.rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self.stop_ids = np.array(sorted(template.stop_token_ids), dtype=np.int64)
        self.started = False
        self.actions: np.ndarray | None = None
        self.group_size = group_size
        self.groups = GroupSchedule(group_size)
        self.episode_group = np.full(n, -1, dtype=np.int64)  # each env's current episode's group id

    # ----- the VecEnv API -----

    def step_wait(self) -> VecEnvStepReturn:
        tokens = self._check_actions(self.actions)
        template, rows = self.env, np.arange(self.num_envs)
        append_token(self.input_ids, self.attention_mask, tokens)
        self.new_ids[rows, self.num_new_tokens] = tokens
        self.num_new_tokens += 1
        dones = np.isin(tokens, self.stop_ids) | (self.num_new_tokens >= template.max_new_tokens)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if template.reward_mode == "dense":  # the score of every running completion, every step
            scores = template.score(self.prompts, self._completions(rows))
            rewards[:] = scores - self.last_score
            self.last_score[:] = scores
        finished = np.flatnonzero(dones)
        if len(finished):
            completions = self._completions(finished)
            if template.reward_mode == "sparse":
                rewards[finished] = template.score([self.prompts[i] for i in finished], completions)
            for i, completion in zip(finished, completions):
                infos[i] = {"prompt": self.prompts[i].text, "completion": completion,
                            "num_new_tokens": int(self.num_new_tokens[i]), "TimeLimit.truncated": False,
                            "terminal_observation": self._observation(i)}
                if self.group_size > 1:
                    infos[i]["group"] = int(self.episode_group[i])
                self.reset_infos[i] = self._start_episode(i)
        return self._observations(), rewards, dones, infos

    def close(self) -> None:
        self.env.close()

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if sorted(self._get_indices(indices)) != list(range(self.num_envs)):
            raise ValueError(f"set_attr({attr_name!r}) on some envs only: the envs of a TextGenVecEnv share one "
                             "configuration; set it on all of them (indices=None).")
        setattr(self.env, attr_name, value)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's text as an RGB frame (``render_mode="rgb_array"``; SB3's ``render()`` tiles them)."""
        return [self._render(i, "rgb_array") if self.render_mode == "rgb_array" else None for i in range(self.num_envs)]

    def render(self, mode: str | None = None) -> str | np.ndarray | None:
        """``"ansi"``: every env's prompt + completion so far, one line each; other modes as SB3 renders them."""
        if (mode or self.render_mode) == "ansi":
            return "\n".join(self._render(i, "ansi") for i in range(self.num_envs))
        return super().render(mode)

    # ----- the per-env methods behind env_method -----

    def _env_action_masks(self, i: int) -> np.ndarray:
        return self.env.action_masks()  # static: the same for every env

    def _env_get_state(self, i: int) -> dict[str, Any]:
        """Env ``i``'s episode and RNG, in :meth:`TextGenEnv.get_state`'s format (checkpoints mix freely)."""
        k = int(self.num_new_tokens[i])
        state = {"prompt": self.prompts[i], "ids": self.input_ids[i][self.attention_mask[i] == 1].tolist(),
                 "new_ids": self.new_ids[i, :k].tolist(), "done": False, "last_score": float(self.last_score[i]),
                 "rng": self.rngs[i].bit_generator.state}
        if self.group_size > 1:  # the shared schedule rides along with every env's state
            state.update(group=int(self.episode_group[i]), groups=self.groups.get_state())
        return state

    def _env_set_state(self, i: int, state: dict[str, Any]) -> None:
        if state["done"]:
            raise ValueError("TextGenVecEnv.set_state: the state is of a finished episode; VecEnvs restart "
                             "finished episodes at once, so they never hold one.")
        self.prompts[i], self.last_score[i] = state["prompt"], state["last_score"]
        place_prompt(self.input_ids[i], self.attention_mask[i], state["ids"], self.env.pad_token_id)
        self.num_new_tokens[i] = len(state["new_ids"])
        self.new_ids[i, : len(state["new_ids"])] = state["new_ids"]
        self.rngs[i].bit_generator.state = state["rng"]
        if self.group_size > 1:
            self.episode_group[i] = state["group"]
            self.groups.set_state(state["groups"])
        self.started = True

    def _env_render(self, i: int) -> str | np.ndarray | None:
        return self._render(i, self.render_mode)

    # ----- internals -----

    def _start_episode(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
        template, info = self.env, {}
        if seed is not None:
            self.rngs[i] = seeding.np_random(seed)[0]
        if self.group_size > 1:
            if options and "prompt" in options:
                raise ValueError("reset options={'prompt': ...} with group_size > 1: a group's prompt is drawn for the "
                                 "whole group; use group_size=1 to choose prompts.")
            self.episode_group[i], (self.prompts[i], prompt_ids) = self.groups.take(template.start_prompt)
            info["group"] = int(self.episode_group[i])
        else:
            self.prompts[i], prompt_ids = template.start_prompt(self.rngs[i], options)
        place_prompt(self.input_ids[i], self.attention_mask[i], prompt_ids, template.pad_token_id)
        self.num_new_tokens[i] = 0
        if template.reward_mode == "dense":
            self.last_score[i] = template.score([self.prompts[i]], [""])[0]
        return {"prompt": self.prompts[i].text, **info}

    def _completions(self, rows: np.ndarray) -> list[str]:
        """Decoded completions of ``rows``, in one batched call of the tokenizer."""
        return self.env.tokenizer.batch_decode([self.new_ids[i, : self.num_new_tokens[i]] for i in rows],
                                               skip_special_tokens=True)

    def _observation(self, i: int) -> Observation:
        return {"input_ids": self.input_ids[i].copy(), "attention_mask": self.attention_mask[i].copy()}

    def _observations(self) -> VecEnvObs:
        return {"input_ids": self.input_ids.copy(), "attention_mask": self.attention_mask.copy()}

    def _render(self, i: int, mode: str | None) -> str | np.ndarray | None:
        if self.prompts[i] is None:
            return None
        return render_text(self.prompts[i].text, self.env.decode(self.new_ids[i, : self.num_new_tokens[i]]), mode)


class BatchedRewardVecEnv(VecEnvWrapper):
    """Scores every completion that ends in a step with a single call of the reward.

    For VecEnvs of single ``TextGenEnv``s (``SubprocVecEnv``, ``DummyVecEnv``); :class:`TextGenVecEnv` does
    this by itself. The wrapped envs defer their final score (``defer_reward=True``); ``step_wait`` sees all
    envs' results at once and fills in the rewards of the finished ones. Monitoring must sit outside this
    wrapper (``VecMonitor``): a ``Monitor`` inside would record the deferred zeros.

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
                           [infos[i]["completion"] for i in pending], [infos[i].pop("references") for i in pending])
            rewards = rewards.astype(np.float32, copy=True)
            rewards[pending] += scores
        return obs, rewards, dones, infos


def make_vec_env(n_envs: int = 8, seed: int | None = None, vec_env_cls: type[VecEnv] | None = None,
                 group_size: int = 1, **env_kwargs: Any) -> VecEnv:
    """``n_envs`` TextGen-v0 envs in a ``VecMonitor`` (episode stats), ready for any SB3 algorithm.

    By default one :class:`TextGenVecEnv` (all envs stepped together, batched rewards). With ``vec_env_cls``
    (``SubprocVecEnv``, ``DummyVecEnv``) the envs are single ``TextGenEnv``s in that VecEnv, with sparse
    rewards batched by :class:`BatchedRewardVecEnv`; in one process (``DummyVecEnv``) they are shallow
    copies of one env, so prompts are tokenized and the reward loaded once. Env ``i`` is seeded with
    ``seed + i`` at the first reset in every case. ``group_size=G`` makes episodes come in groups of ``G``
    on one prompt (see :class:`TextGenVecEnv`; GRPO, RLOO); it needs the default ``vec_env_cls``.

    With ``text_env=...`` among the arguments the envs are multi-turn (:class:`lm_gym.MultiTurnEnv`'s arguments),
    in a :class:`lm_gym.MultiTurnVecEnv` by default; a group's episodes then play the same text-env instance.
    """
    multi_turn = "text_env" in env_kwargs
    if vec_env_cls is None:
        if multi_turn:
            from lm_gym.multiturn_vector import MultiTurnVecEnv

            venv = MultiTurnVecEnv(n_envs, group_size=group_size, **env_kwargs)
        else:
            venv = TextGenVecEnv(n_envs, group_size=group_size, **env_kwargs)
    elif group_size != 1:
        raise ValueError(f"group_size={group_size} with vec_env_cls={vec_env_cls.__name__}: groups of one prompt are "
                         "scheduled by TextGenVecEnv; leave vec_env_cls=None.")
    else:
        if multi_turn:
            from lm_gym.multiturn import MultiTurnEnv as env_class
        else:
            env_class = TextGenEnv
        if vec_env_cls is DummyVecEnv:
            template = env_class(**env_kwargs)
            venv = vec_env_cls([lambda: copy.copy(template) for _ in range(n_envs)])
        else:
            venv = vec_env_cls([lambda: env_class(**env_kwargs) for _ in range(n_envs)])
        if not multi_turn and env_kwargs.get("reward_mode", "sparse") == "sparse":
            venv = BatchedRewardVecEnv(venv)
    if seed is not None:
        venv.seed(seed)
    return VecMonitor(venv)
