"""Rollout buffers that keep each episode's tokens once and hand the update packed whole episodes.

SB3's own buffers keep every step's observation, a whole window: ``16 x window`` bytes per token for TextGen-v0's
int64 ids and mask, O(L^2) per episode of L tokens (4.2 GB for 8 envs x 4,096 tokens), copied once more by
``get()``. A step's observation is a prefix of its episode's tokens, so these buffers keep, per env, the tokens of
the rollout once (int32), and per step where its episode's tokens start and how many of them it sees, next to
SB3's per-step floats: 44 bytes per step, whatever the length. The update receives each minibatch as packed
episodes (:mod:`agents.lm.packing`), which :class:`agents.LMActorCriticPolicy` runs as rows of real tokens.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer, MaskableDictRolloutBufferSamples
from stable_baselines3.common.buffers import BaseBuffer, DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples

from agents.lm.packing import pack, windows


class TokenLog:
    """One env's tokens in a rollout, appended in place (the capacity doubles, as a Python list's does)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.data = np.empty(capacity, dtype=np.int32)
        self.size = 0

    def extend(self, ids: np.ndarray) -> None:
        end = self.size + len(ids)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), dtype=np.int32)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = ids
        self.size = end


class EpisodeTokenStore:
    """Mixin for SB3 Dict rollout buffers: tokens instead of windows, minibatches of whole packed episodes.

    Storage, per step: the env's ``sequence_start`` (where the step's episode begins in that env's :class:`TokenLog`)
    and ``lengths`` (how many tokens its observation holds); per env, the tokens the steps added (one action, or a
    turn end and the env's reply), with a sequence's first observation whole. A step whose observation does not
    extend the previous one (a new episode, a rollout's first step, a window that slid) starts a new sequence.

    ``get`` yields shuffled whole episodes (or the part of an episode inside this rollout), each with its steps in
    order, in minibatches that close once they reach ``batch_size`` steps (so their size varies a little); their
    ``observations`` are packed episodes, one LM forward per packed row in the update.
    """

    flattened = ("actions", "values", "log_probs", "advantages", "returns")
    per_step = ("rewards", "returns", "episode_starts", "values", "log_probs", "advantages")
    planned_order: np.ndarray | None = None  # the episode order of the next get(), drawn ahead (plan_minibatches)

    def reset(self) -> None:
        n, n_envs = self.buffer_size, self.n_envs
        self.window = int(self.obs_shape["input_ids"][0])
        self.actions = np.zeros((n, n_envs, self.action_dim), dtype=self.action_space.dtype)
        for name in self.per_step:
            self.__dict__[name] = np.zeros((n, n_envs), dtype=np.float32)
        self.sequence_start = np.zeros((n, n_envs), dtype=np.int32)
        self.lengths = np.zeros((n, n_envs), dtype=np.int32)
        self.tokens = [TokenLog() for _ in range(n_envs)]
        self.open_sequence = np.full(n_envs, -1, dtype=np.int64)  # each env's current sequence start, -1: none
        self.pad_token_id = 0  # the padding id seen in observations, for the windows rebuilt by ``observations``
        self.generator_ready = False
        self.planned_order = None
        BaseBuffer.reset(self)

    def add(self, obs: dict[str, np.ndarray], action: np.ndarray, reward: np.ndarray, episode_start: np.ndarray,
            value: torch.Tensor, log_prob: torch.Tensor) -> None:
        self.store_tokens(obs, np.asarray(episode_start, dtype=bool))
        self.actions[self.pos] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[self.pos] = np.asarray(reward)
        self.episode_starts[self.pos] = np.asarray(episode_start)
        self.values[self.pos] = value.clone().cpu().numpy().flatten()
        self.log_probs[self.pos] = log_prob.clone().cpu().numpy().reshape(-1)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    def store_tokens(self, obs: dict[str, np.ndarray], episode_start: np.ndarray) -> None:
        """Keep what each env's observation added to its sequence (all of it where a sequence starts)."""
        ids, mask = np.asarray(obs["input_ids"]), np.asarray(obs["attention_mask"])
        lengths = mask.sum(1)
        # The layout, checked on a rollout's first step (a wrong env shows it at once; later steps skip the O(window)).
        if self.pos == 0 and not (mask == (np.arange(self.window) >= self.window - lengths[:, None])).all():
            raise ValueError(f"{type(self).__name__} needs TextGen-v0's observations (left-padded: padding, then "
                             "every real token, the newest last); got an attention_mask with padding between real "
                             "tokens. Use SB3's DictRolloutBuffer for other layouts.")
        padded = np.flatnonzero(lengths < self.window)
        if len(padded):
            self.pad_token_id = int(ids[padded[0], 0])
        for env in range(self.n_envs):
            length, log, start = int(lengths[env]), self.tokens[env], int(self.open_sequence[env])
            row = ids[env, self.window - length:]
            known = log.size - start  # the open sequence's tokens so far: the previous observation's
            if start >= 0 and not episode_start[env] and length > known and np.array_equal(
                    row[:known], log.data[start:log.size]):
                log.extend(row[known:])
            else:
                start = self.open_sequence[env] = log.size
                log.extend(row)
            self.sequence_start[self.pos, env], self.lengths[self.pos, env] = start, length

    def store_bytes(self) -> int:
        """Bytes this rollout's data holds (the token logs' used part and every per-step array)."""
        arrays = [self.actions, self.sequence_start, self.lengths, *(self.__dict__[name] for name in self.per_step)]
        return sum(a.nbytes for a in arrays) + sum(log.size * log.data.itemsize for log in self.tokens)

    def packed_observations(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """The packed observations (:mod:`agents.lm.packing`) of steps at env-major flat ``indices``
        (``env * buffer_size + step``, SB3's order after ``get`` flattens), as tensors on the buffer's device."""
        env, step = np.divmod(np.asarray(indices), self.buffer_size)
        starts, lengths = self.sequence_start[step, env], self.lengths[step, env]
        keys, step_sequence = np.unique(env.astype(np.int64) << 32 | starts, return_inverse=True)
        longest = np.zeros(len(keys), dtype=np.int64)
        np.maximum.at(longest, step_sequence, lengths)
        sequences = [torch.from_numpy(self.tokens[key >> 32].data[key & 0xFFFFFFFF:][:size])
                     for key, size in zip(keys.tolist(), longest.tolist())]
        packed = pack(sequences, torch.from_numpy(step_sequence.reshape(-1)), torch.from_numpy(lengths))
        return {key: value.to(self.device) for key, value in packed.items()}

    @property
    def observations(self) -> dict[str, np.ndarray]:
        """Every step's window, rebuilt: ``{"input_ids", "attention_mask"}`` of ``(n_steps, n_envs, window)``. O(steps x
        window), what this buffer avoids storing: for inspection, not for training code."""
        flat = windows(self.packed_observations(np.arange(self.buffer_size * self.n_envs)), self.window,
                       self.pad_token_id)
        return {key: value.cpu().numpy().reshape(self.n_envs, self.buffer_size, self.window).swapaxes(0, 1)
                for key, value in flat.items()}

    def episode_segments(self) -> list[np.ndarray]:
        """Env-major flat indices of each sequence's steps in this rollout, in order (env by env)."""
        segments = []
        for env in range(self.n_envs):
            starts = self.sequence_start[:, env]
            cuts = np.flatnonzero(starts[1:] != starts[:-1]) + 1
            segments.extend(env * self.buffer_size + steps for steps in np.split(np.arange(self.buffer_size), cuts))
        return segments

    def in_order_batches(self, batch_size: int) -> list[np.ndarray]:
        """Consecutive whole segments, in env-major order, in batches that close at ``batch_size`` steps."""
        return _close_at(self.episode_segments(), batch_size)

    def get(self, batch_size: int | None = None) -> Generator[DictRolloutBufferSamples, None, None]:
        assert self.full, "the rollout buffer must be full before sampling from it"
        if not self.generator_ready:
            for name in self.flattened:
                self.__dict__[name] = self.swap_and_flatten(self.__dict__[name])
            self.generator_ready = True
        for indices in self.plan_minibatches(batch_size, keep=False):
            yield self._get_samples(indices)

    def plan_minibatches(self, batch_size: int | None, keep: bool = True) -> list[np.ndarray]:
        """The flat indices of each minibatch of the next ``get(batch_size)``. ``keep``: draw the episode order now
        and have that ``get`` use it (so a caller can run the update's exact minibatches ahead of it, as
        :class:`agents.sb3.rollout_log_probs.RecomputeLogProbsCallback` does); the random stream is drawn once
        either way."""
        segments = self.episode_segments()
        order = self.planned_order if self.planned_order is not None else np.random.permutation(len(segments))
        self.planned_order = order if keep else None
        return _close_at([segments[index] for index in order], batch_size or self.buffer_size * self.n_envs)

    def _get_samples(self, indices: np.ndarray, env=None) -> DictRolloutBufferSamples:
        return DictRolloutBufferSamples(self.packed_observations(indices), *self._step_tensors(indices))

    def _step_tensors(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """actions, old values, old log-probs, advantages, returns of flattened steps ``indices``."""
        return (self.to_torch(self.actions[indices].astype(np.float32, copy=False)),
                *(self.to_torch(self.__dict__[name][indices].flatten()) for name in self.flattened[1:]))


def _close_at(segments: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    batches, batch, size = [], [], 0
    for segment in segments:
        batch.append(segment)
        size += len(segment)
        if size >= batch_size:
            batches.append(np.concatenate(batch))
            batch, size = [], 0
    if batch:
        batches.append(np.concatenate(batch))
    return batches


class EpisodeRolloutBuffer(EpisodeTokenStore, DictRolloutBuffer):
    """``DictRolloutBuffer`` that keeps tokens, with packed-episode minibatches:
    ``PPO(..., rollout_buffer_class=EpisodeRolloutBuffer)``."""


class MaskableEpisodeRolloutBuffer(EpisodeTokenStore, MaskableDictRolloutBuffer):
    """MaskablePPO's Dict buffer that keeps tokens, with packed-episode minibatches and compact action masks.

    sb3-contrib stores masks as float32, ``n_steps x n_envs x vocab`` (3.3 GB at 2048 x 8 x 50,257 tokens). Here
    each distinct mask is kept once, as the ids it allows or bans (int32, whichever list is shorter), and each step
    keeps which one it saw: static ``allowed_tokens``/``banned_tokens`` cost their ids once per rollout and 4 bytes
    per step; a mask that changes every step costs its ids (and a ``vocab / 8``-byte key) at every change. ``MaskablePPO(...,
    rollout_buffer_class=MaskableEpisodeRolloutBuffer)``. (NLPO's nucleus masks are not stored: the policy
    recomputes them from its delayed copy of the LM, the same masks the rollout sampled under.)
    """

    def reset(self) -> None:
        if not isinstance(self.action_space, spaces.Discrete):
            raise ValueError(f"MaskableEpisodeRolloutBuffer needs a Discrete action space, got {self.action_space}.")
        self.mask_dims = int(self.action_space.n)
        super().reset()
        self.mask_ids = np.zeros((self.buffer_size, self.n_envs), dtype=np.int32)
        # Each distinct mask once: (True, the ids it allows) or (False, the ids it bans), whichever is shorter.
        self.distinct_masks: list[tuple[bool, np.ndarray]] = [(False, np.zeros(0, dtype=np.int32))]  # 0: no ban
        self.mask_index = {np.packbits(np.ones(self.mask_dims, dtype=bool)).tobytes(): 0}
        self.last_masks = np.ones((self.n_envs, self.mask_dims), dtype=bool)
        self.last_mask_ids = np.zeros(self.n_envs, dtype=np.int32)

    def add(self, *args, action_masks: np.ndarray | None = None, **kwargs) -> None:
        if action_masks is not None:
            masks = np.asarray(action_masks, dtype=bool).reshape(self.n_envs, self.mask_dims)
            for env in np.flatnonzero((masks != self.last_masks).any(1)):  # an env's mask changed: look it up
                self.last_masks[env] = masks[env]
                self.last_mask_ids[env] = self.mask_id(masks[env])
            self.mask_ids[self.pos] = self.last_mask_ids
        super().add(*args, **kwargs)

    def mask_id(self, mask: np.ndarray) -> int:
        key = np.packbits(mask).tobytes()
        if key not in self.mask_index:
            allowed = np.flatnonzero(mask).astype(np.int32)
            banned = np.flatnonzero(~mask).astype(np.int32)
            self.distinct_masks.append((True, allowed) if len(allowed) <= len(banned) else (False, banned))
            self.mask_index[key] = len(self.distinct_masks) - 1
        return self.mask_index[key]

    def store_bytes(self) -> int:
        return super().store_bytes() + self.mask_ids.nbytes + sum(ids.nbytes for _, ids in self.distinct_masks)

    def masks_of(self, indices: np.ndarray) -> np.ndarray | None:
        """``(len(indices), vocab)`` bool masks of env-major flat steps ``indices``; None when all allow everything."""
        env, step = np.divmod(np.asarray(indices), self.buffer_size)
        ids = self.mask_ids[step, env]
        if not ids.any():
            return None
        masks = np.ones((len(ids), self.mask_dims), dtype=bool)
        for mask_id in np.unique(ids):
            rows = np.flatnonzero(ids == mask_id)
            allows, listed = self.distinct_masks[mask_id]
            if allows:
                masks[rows] = False
            masks[rows[:, None], listed[None, :]] = allows
        return masks

    @property
    def restricts_actions(self) -> bool:
        """Whether any step's mask bans a token."""
        return bool(self.mask_ids.any())

    @property
    def action_masks(self) -> np.ndarray:
        """Every step's mask, rebuilt ``(n_steps, n_envs, vocab)`` bool: for inspection, not for training code."""
        flat = self.masks_of(np.arange(self.buffer_size * self.n_envs))
        if flat is None:
            return np.ones((self.buffer_size, self.n_envs, self.mask_dims), dtype=bool)
        return flat.reshape(self.n_envs, self.buffer_size, self.mask_dims).swapaxes(0, 1)

    def _get_samples(self, indices: np.ndarray, env=None) -> MaskableDictRolloutBufferSamples:
        masks = self.masks_of(indices)  # None (every token allowed) is what LMActorCriticPolicy takes as no mask
        return MaskableDictRolloutBufferSamples(self.packed_observations(indices), *self._step_tensors(indices),
                                                None if masks is None else self.to_torch(masks))
