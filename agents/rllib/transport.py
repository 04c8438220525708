"""Episodes leave RLlib's env runners as tokens, not windows.

RLlib's new API stack keeps every observation in its episodes and ships them from env runners to learners through
Ray's object store (``to_numpy()`` stacks them: ``(T + 1, window)``), so a TextGen-v0 episode of L tokens travels as
O(L^2) ids and mask (268 MB for one 4,096-token episode). The new stack has no observation compression; the template
for this is RLlib's frame stacking (``rllib/examples/connectors/frame_stacking.py``): the env emits a small
observation, an env-to-module connector rebuilds the model's input from the episode, a learner connector rebuilds it
again. Here:

- :class:`TokenDeltas` (a Gymnasium wrapper, on the env runners) emits ``{"length": n}`` (the observation's real
  tokens) and, in ``info[TOKENS]``, what changed: ``(start, ids)`` means the observation's tokens are the previous
  ones up to ``start``, then ``ids``. A step that only appended the action (every single-turn step) says nothing:
  the action is in the episode already. Resets, a multi-turn turn end (the end token and the env's reply) and a
  window that no longer extends the last one carry their tokens.
- :class:`WindowsFromTokens` (env-to-module, on the env runners) keeps each running episode's tokens and hands the
  module TextGen-v0's window, as the KV-cached rollout expects. At the first step of a continued episode chunk it
  writes the chunk's starting tokens into that chunk's first ``info`` (``info[PREFIX]``): a chunk is then
  self-contained, and an episode's tokens cross the object store once.
- :class:`TokensToWindows` (the learners' first connector) rebuilds every step's window from the chunk's tokens,
  actions and deltas, and puts them back in the episode: GAE or V-trace, KL shaping and the log-prob recompute read
  the same observations as before (tested equal). The windows exist on the learner only, one batch at a time.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer

from lm_gym.env import place_prompt

TOKENS = "lm_gym/tokens"  # info: (start, ids): the observation's tokens are the previous ones up to start, then ids
PREFIX = "lm_gym/prefix"  # info of a continued chunk's first step: the tokens it starts from
PAD = "lm_gym/pad"  # info at reset: the env's padding id


class TokenDeltas(gym.Wrapper):
    """A TextGen-v0 env (or MultiTurnEnv) whose observation is ``{"length": n}``, its tokens going in ``info``
    (see the module docstring). ``observation_space["length"].high`` is the window."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.window = int(env.observation_space["input_ids"].shape[0])
        self.observation_space = spaces.Dict({"length": spaces.Box(0, self.window, (), np.int32)})
        self.tokens = np.zeros(0, dtype=np.int64)

    def reset(self, **kwargs) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self.compact(obs, dict(info), None)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self.compact(obs, dict(info), int(action))
        return obs, reward, terminated, truncated, info

    def compact(self, obs: dict[str, np.ndarray], info: dict[str, Any], action: int | None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        length = int(obs["attention_mask"].sum())
        tokens = obs["input_ids"][self.window - length:]
        known = len(self.tokens)
        extends = action is not None and length > known and np.array_equal(tokens[:known], self.tokens)
        if not (extends and length == known + 1 and tokens[-1] == action):  # more than the action was added
            start = known if extends else 0
            info[TOKENS] = (start, tokens[start:].astype(np.int32))
            if start == 0:  # a whole observation (a reset, or after a restored env state): its padding id too
                info[PAD] = int(obs["input_ids"][0]) if length < self.window else 0
        self.tokens = tokens.copy()
        return {"length": np.int32(length)}, info


def forget_tokens(env: gym.Env) -> None:
    """After an env's state was set from outside (a restored checkpoint), the :class:`TokenDeltas` around it sends its
    next observation whole: what it last saw is no longer what the env holds."""
    while env is not None:
        if isinstance(env, TokenDeltas):
            env.tokens = np.zeros(0, dtype=np.int64)
            return
        env = getattr(env, "env", None)


def window_space(compact_space: spaces.Dict, action_space: spaces.Discrete) -> spaces.Dict:
    """TextGen-v0's observation space for :class:`TokenDeltas`' compact one."""
    window = int(compact_space["length"].high)
    return spaces.Dict({"input_ids": spaces.Box(0, int(action_space.n) - 1, (window,), np.int64),
                        "attention_mask": spaces.Box(0, 1, (window,), np.int64)})


def apply_delta(tokens: np.ndarray, length: int, info: dict[str, Any] | None, action: int | None) -> np.ndarray:
    """The tokens of an observation of ``length`` tokens, from the previous observation's ``tokens``."""
    delta = (info or {}).get(TOKENS)
    if delta is not None:
        start, ids = delta
        return np.concatenate([tokens[:start], ids])
    if length == len(tokens):
        return tokens  # the same observation again (RLlib's bootstrap step)
    if length == len(tokens) + 1 and action is not None:
        return np.append(tokens, action)
    raise ValueError(f"an observation of {length} tokens follows one of {len(tokens)} without its tokens: the episode "
                     "was not collected through agents.rllib.transport.TokenDeltas.")


class WindowsFromTokens(ConnectorV2):
    """Env-to-module connector: the window of each episode that just stepped, from the tokens seen so far."""

    def recompute_output_observation_space(self, input_observation_space, input_action_space) -> spaces.Space:
        self.window = int(input_observation_space["length"].high)
        return window_space(input_observation_space, input_action_space)

    def __init__(self, input_observation_space=None, input_action_space=None, **kwargs):
        self.running: dict[str, tuple[np.ndarray, int]] = {}  # episode id -> (its tokens, padding id)
        self.chunks_seen: set[tuple[str, int]] = set()
        super().__init__(input_observation_space, input_action_space, **kwargs)

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list, explore=None, shared_data=None,
                 **kwargs) -> dict[str, Any]:
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=True):
            info = episode.get_infos(-1)
            length = int(episode.get_observations(-1)["length"])
            if episode.id_ not in self.running or (len(episode) == 0 and episode.t_started == 0):
                # A new episode, or one this connector has not seen (its runner was restored from a checkpoint, and
                # the restored env's first observation comes whole): its tokens from this step.
                tokens, pad = apply_delta(np.zeros(0, np.int64), length, info, None), int(info.get(PAD, 0))
                if len(episode) or episode.t_started > 0:  # a chunk's start: what this step extended (the rule)
                    episode.get_infos(0)[PREFIX] = (tokens[:int(episode.get_observations(0)["length"])]
                                                    .astype(np.int32), pad)
            else:
                before, pad = self.running[episode.id_]
                tokens = apply_delta(before, length, info, int(episode.get_actions(-1))) if len(episode) else before
                if episode.t_started > 0 and (episode.id_, episode.t_started) not in self.chunks_seen:
                    # A continued chunk's first call (at its first step): give its starting observation, the one
                    # before this step, the tokens it starts from.
                    episode.get_infos(0)[PREFIX] = (before.astype(np.int32), pad)
            self.chunks_seen.add((episode.id_, episode.t_started))
            if episode.is_done:
                self.running.pop(episode.id_, None)
            else:
                self.running[episode.id_] = (tokens, pad)
            ids, mask = np.empty(self.window, dtype=np.int64), np.empty(self.window, dtype=np.int64)
            place_prompt(ids, mask, tokens, pad)
            self.add_batch_item(batch, Columns.OBS, {"input_ids": ids, "attention_mask": mask}, episode)
        if len(self.chunks_seen) > 4 * len(self.running) + 1024:  # forget chunks of episodes that ended
            self.chunks_seen = {key for key in self.chunks_seen if key[0] in self.running}
        return batch


class TokensToWindows(ConnectorV2):
    """Learner connector (the first): every step's window, rebuilt from the chunk's tokens, put back in the episode
    as its observations, so that everything after it reads TextGen-v0's observations."""

    def recompute_output_observation_space(self, input_observation_space, input_action_space) -> spaces.Space:
        if isinstance(input_observation_space, spaces.Dict) and "length" in input_observation_space.spaces:
            return window_space(input_observation_space, input_action_space)
        return input_observation_space

    def __call__(self, *, rl_module, batch: dict[str, Any], episodes: list, shared_data=None, **kwargs
                 ) -> dict[str, Any]:
        space = rl_module[DEFAULT_MODULE_ID].observation_space  # the module's: TextGen-v0's window
        window = space["input_ids"].shape[0]
        for episode in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
            if "length" not in episode.get_observations(0):
                continue  # already windows
            lookback = episode.observations.lookback
            lengths = np.asarray(episode.get_observations(slice(0, len(episode) + 1))["length"]).reshape(-1)
            infos = episode.get_infos(slice(0, len(episode) + 1))
            actions = np.asarray(episode.get_actions(slice(0, len(episode)))).reshape(-1)
            first = infos[0] or {}
            if PREFIX in first:
                tokens, pad = first[PREFIX]
            else:
                tokens, pad = apply_delta(np.zeros(0, np.int64), int(lengths[0]), first, None), int(first.get(PAD, 0))
            ids = np.empty((lookback + len(lengths), window), dtype=np.int64)
            mask = np.empty_like(ids)
            for t, length in enumerate(lengths):
                if t:
                    tokens = apply_delta(tokens, int(length), infos[t], int(actions[t - 1]))
                place_prompt(ids[lookback + t], mask[lookback + t], tokens, pad)
            ids[:lookback], mask[:lookback] = ids[lookback], mask[lookback]  # lookback steps: not trained on
            episode.observations = InfiniteLookbackBuffer({"input_ids": ids, "attention_mask": mask}, lookback, space)
            episode.observation_space = space
        return batch
