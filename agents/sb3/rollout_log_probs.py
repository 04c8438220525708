"""The policy's log-probs of a collected rollout, recomputed with the update's forward (one per episode).

Two uses, both at ``on_rollout_end``, before the update:

- :class:`RecomputeLogProbsCallback` replaces the rollout's stored log-probs (what PPO's ratio divides by) with
  the update's own numbers. The rollout ran the KV-cached path, one token per call; the update runs whole
  sequences. In float32 the two agree to ~1e-6; under bfloat16 they differ by up to a few percent in the ratio
  at learning rate 0, a bias every update would carry. verl and OpenRLHF recompute the old log-probs the same way.
- :class:`agents.KLPenaltyCallback` takes the KL to the initial LM on the **unmasked** policy: a stored log-prob
  under NLPO's nucleus mask (or the env's static mask) is normalised over the allowed tokens only, and
  ``log p_masked - log q`` would carry ``-log Z`` (the mass outside the mask) as if it were a divergence.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sb3_contrib import TRPO
from stable_baselines3 import A2C
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback

from agents.lm.kl import Batches, log_probs_in, window_batches
from agents.sb3.buffers import EpisodeTokenStore, MaskableEpisodeRolloutBuffer
from agents.sb3.policy import LMActorCriticPolicy


def env_major(array: np.ndarray) -> np.ndarray:
    """``(n_steps, n_envs, ...)`` -> ``(n_envs * n_steps, ...)``: each episode's steps next to each other, so
    that rows sharing a prefix land in one forward."""
    return array.swapaxes(0, 1).reshape(-1, *array.shape[2:])


def observation_batches(buffer: RolloutBuffer, device: torch.device | str, batch_size: int = 512,
                        batches: list[np.ndarray] | None = None) -> Batches:
    """A full (not yet flattened) buffer's observations in batches of env-major flat steps (``env * n_steps +
    step``): packed episodes from an episode buffer (whole episodes per batch), windows from SB3's own buffers.
    ``batches``: the flat steps of each batch (default: in order, closing at ``batch_size`` steps)."""
    if isinstance(buffer, EpisodeTokenStore):
        for part in buffer.in_order_batches(batch_size) if batches is None else batches:
            yield part, {key: value.to(device) for key, value in buffer.packed_observations(part).items()}
        return
    observations = {key: env_major(value) for key, value in buffer.observations.items()}
    if batches is None:
        yield from window_batches(observations, device, batch_size)
        return
    for part in batches:
        yield part, {key: torch.as_tensor(value[part], device=device) for key, value in observations.items()}


def step_masks(buffer: RolloutBuffer) -> Callable[[np.ndarray | slice], np.ndarray | None]:
    """The env's action masks stored in the buffer (MaskablePPO) as a lookup of env-major flat steps; it gives None
    where they allow every token. SB3's float masks are checked and flattened once, here."""
    if isinstance(buffer, MaskableEpisodeRolloutBuffer):
        return buffer.masks_of
    masks = getattr(buffer, "action_masks", None)
    flat = None if masks is None or np.all(masks) else env_major(masks)
    return lambda steps: None if flat is None else flat[steps]


def restricts_actions(buffer: RolloutBuffer) -> bool:
    """Whether any stored action mask bans a token."""
    if isinstance(buffer, MaskableEpisodeRolloutBuffer):
        return buffer.restricts_actions
    masks = getattr(buffer, "action_masks", None)
    return masks is not None and not np.all(masks)


def uses_masks(policy: LMActorCriticPolicy, buffer: RolloutBuffer) -> bool:
    """Whether the stored log-probs were normalised over a subset of the vocabulary."""
    return policy.nlpo is not None or restricts_actions(buffer)


@torch.no_grad()
def policy_log_probs(policy: LMActorCriticPolicy, buffer: RolloutBuffer, masked: bool = True,
                     batches: list[np.ndarray] | None = None, batch_size: int = 512) -> np.ndarray:
    """``(n_steps, n_envs)`` float32 ``log p(action | observation)`` of a full (not yet flattened) buffer.

    ``masked``: under the masks the update applies (the env's, stored by MaskablePPO, and NLPO's nucleus), as
    ``evaluate_actions`` computes them; else the LM's plain softmax over the whole vocabulary.
    ``batches``: the flat (env-major, ``env * n_steps + step``) steps of each forward (see
    :func:`observation_batches`).
    """
    n_steps, n_envs = buffer.rewards.shape
    actions = env_major(buffer.actions).reshape(-1)
    steps = observation_batches(buffer, policy.device, batch_size, batches)
    if not masked:
        return log_probs_in(lambda obs: policy.logits_and_hidden(obs)[0], steps, actions).reshape(n_envs, n_steps).T
    masks = step_masks(buffer)
    out = np.empty(len(actions), dtype=np.float32)
    for part, obs in steps:
        chosen = torch.as_tensor(actions[part], device=policy.device).long()
        _, log_prob, _ = policy.evaluate_actions(obs, chosen, masks(part))
        out[part] = log_prob.float().cpu().numpy()
    return out.reshape(n_envs, n_steps).T


class RecomputeLogProbsCallback(BaseCallback):
    """Before each update, overwrite the rollout's log-probs with those of the update's own forward.

    Put it first among the callbacks (before ``KLPenaltyCallback``, which then reads the recomputed numbers).
    ``lm-gym train`` adds it whenever the LM runs in bfloat16 (``dtype`` or ``autocast_dtype``), where the
    KV-cached rollout and the full-sequence update disagree; ``recompute_log_probs=True/False`` forces it.
    With an episode buffer (:class:`agents.EpisodeRolloutBuffer`) it runs the first epoch's own minibatches
    (drawn ahead, the random stream unchanged): the same shapes give the same half-precision rounding, so the
    first epoch's ratio is exactly 1 before the weights move. Measured (bundled LM, autocast bfloat16, learning
    rate 0, one rollout of 512 tokens): max |ratio - 1| 0.058 without, 0.0 with; mean 2e-3 -> 0.
    Cost: one forward per episode without gradients, about a third of one update epoch.
    Logs ``train/recomputed_log_prob_shift``: the mean absolute change it made.
    """

    def _on_training_start(self) -> None:
        if not isinstance(self.model.policy, LMActorCriticPolicy):
            raise TypeError(f"RecomputeLogProbsCallback needs an LMActorCriticPolicy, got "
                            f"{type(self.model.policy).__name__}.")

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        batches = None
        if isinstance(buffer, EpisodeTokenStore):  # A2C and TRPO's actor step take the whole rollout as one batch
            first_batch_size = None if isinstance(self.model, (A2C, TRPO)) else self.model.batch_size
            batches = buffer.plan_minibatches(first_batch_size)
        recomputed = policy_log_probs(self.model.policy, buffer, masked=True, batches=batches)
        self.logger.record("train/recomputed_log_prob_shift", float(np.abs(recomputed - buffer.log_probs).mean()))
        buffer.log_probs[:] = recomputed
