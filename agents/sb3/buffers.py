"""Rollout buffers whose minibatches are whole episodes, so an episode costs one LM forward."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
from gymnasium import spaces
from sb3_contrib.common.maskable.buffers import MaskableDictRolloutBuffer
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples


class EpisodeBatches:
    """Mixin for SB3 Dict rollout buffers: ``get`` yields shuffled whole episodes, each with its steps in order.

    Stock SB3 samples single steps at random, so the update runs the LM once per generated token, each
    time over the whole prefix. Here consecutive rows of a minibatch are consecutive steps of one episode,
    and :class:`agents.LMActorCriticPolicy` evaluates each such run with a single forward (exactly the
    same numbers). Minibatches hold whole episodes (or the part of an episode inside this rollout) and
    close once they reach ``batch_size`` steps, so their size varies a little.
    """

    flattened = ("actions", "values", "log_probs", "advantages", "returns")
    planned_order: np.ndarray | None = None  # the episode order of the next get(), drawn ahead (plan_minibatches)

    def episode_segments(self) -> list[np.ndarray]:
        """Flat indices (after ``swap_and_flatten``: ``env * buffer_size + step``) of each episode, in order."""
        starts = self.episode_starts.astype(bool)
        segments = []
        for env in range(self.n_envs):
            cuts = np.flatnonzero(starts[1:, env]) + 1
            segments.extend(env * self.buffer_size + steps for steps in np.split(np.arange(self.buffer_size), cuts))
        return segments

    def get(self, batch_size: int | None = None) -> Generator[DictRolloutBufferSamples, None, None]:
        assert self.full, "the rollout buffer must be full before sampling from it"
        if not self.generator_ready:
            for key, obs in self.observations.items():
                self.observations[key] = self.swap_and_flatten(obs)
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
        batch_size = batch_size or self.buffer_size * self.n_envs
        segments = self.episode_segments()
        order = self.planned_order if self.planned_order is not None else np.random.permutation(len(segments))
        self.planned_order = order if keep else None
        batches, batch, size = [], [], 0
        for index in order:
            batch.append(segments[index])
            size += len(segments[index])
            if size >= batch_size:
                batches.append(np.concatenate(batch))
                batch, size = [], 0
        if batch:
            batches.append(np.concatenate(batch))
        return batches

    def reset(self) -> None:
        self.planned_order = None
        super().reset()


class EpisodeRolloutBuffer(EpisodeBatches, DictRolloutBuffer):
    """``DictRolloutBuffer`` with episode minibatches: ``PPO(..., rollout_buffer_class=EpisodeRolloutBuffer)``."""


class MaskableEpisodeRolloutBuffer(EpisodeBatches, MaskableDictRolloutBuffer):
    """MaskablePPO's Dict buffer with episode minibatches and **boolean** action masks.

    sb3-contrib stores masks as float32: ``n_steps x n_envs x vocab`` is 3.3 GB at 2048 x 8 x 50,257 tokens;
    booleans cut that 4x. ``MaskablePPO(..., rollout_buffer_class=MaskableEpisodeRolloutBuffer)``.
    """

    flattened = (*EpisodeBatches.flattened, "action_masks")

    def reset(self) -> None:
        if not isinstance(self.action_space, spaces.Discrete):
            raise ValueError(f"MaskableEpisodeRolloutBuffer needs a Discrete action space, got {self.action_space}.")
        self.mask_dims = int(self.action_space.n)
        self.action_masks = np.ones((self.buffer_size, self.n_envs, self.mask_dims), dtype=bool)
        self.planned_order = None
        DictRolloutBuffer.reset(self)  # MaskableDictRolloutBuffer.reset would first allocate float32 masks
