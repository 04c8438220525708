"""KLPenaltyCallback: per-token KL-to-reference reward shaping for SB3's on-policy algorithms."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from torch import nn

from agents.lm.kl import KL_HORIZON, AdaptiveKLController, check_kl_arguments, episode_equivalents, kl_estimate, \
    log_probs_in, reference_logits
from agents.sb3.policy import LMActorCriticPolicy
from agents.sb3.rollout_log_probs import env_major, observation_batches, policy_log_probs, uses_masks


class KLPenaltyCallback(BaseCallback):
    """Subtract ``coef * KL(policy || initial LM)`` from every token's reward, then recompute advantages.

    SB3 computes returns and advantages just before ``on_rollout_end``; this callback scores each stored
    (observation, token) with a frozen reference LM, shapes the buffer's rewards and calls
    ``compute_returns_and_advantage`` again, so stock PPO/A2C optimise ``reward - coef * KL``.
    ``rollout/ep_rew_mean`` stays the task reward; ``kl/*`` entries go to SB3's logger.

    - The KL is that of the policy's plain softmax: under masks (NLPO's nucleus, the env's static masks) the
      stored log-probs are renormalised over the allowed tokens and are recomputed unmasked for the KL, so the
      KL is 0 wherever the policy still is the initial LM (as RL4LMs computes it).
    - GAE bootstraps from ``V(s_T)`` of the observations that follow the rollout, computed here from the
      algorithm's ``_last_obs`` (MaskablePPO does not pass its bootstrap value to callbacks).
    - ``kl/per_episode`` counts the episodes that the rollout's edges cut by their tokens
      (:func:`agents.lm.kl.episode_equivalents`), and the adaptive controller steps by that many episodes.
    - The per-token penalty it subtracted, ``(n_steps, n_envs)``, is left on the buffer as
      ``rollout_buffer.kl_penalties``: :class:`agents.GroupAdvantageCallback` reads it there (the buffer's rewards
      also hold SB3's truncation bootstrap, so the penalty is not their difference from the task rewards).

    Args:
        coef: KL coefficient (the initial one when ``target`` is set).
        target: target KL per episode, in nats; ``None`` keeps ``coef`` fixed.
        horizon: the adaptive controller's horizon, in episodes (see :class:`agents.AdaptiveKLController`).
        estimator: ``"k1"`` (``log p - log q``, unbiased) or ``"k3"`` (``(r - 1) - log r``, ``r = q / p``,
            never negative, lower variance).
        batch_size: observations per reference forward.
    """

    def __init__(self, coef: float = 0.05, target: float | None = None, horizon: float = KL_HORIZON,
                 estimator: str = "k1", batch_size: int = 512, verbose: int = 0):
        super().__init__(verbose)
        check_kl_arguments(coef, estimator)
        self.controller = None if target is None else AdaptiveKLController(coef, target, horizon)
        self._coef = coef
        self.estimator, self.batch_size = estimator, batch_size
        self.reference: nn.Module | None = None
        self.running_lengths: np.ndarray | None = None  # per env: steps of its episode before this rollout

    @property
    def coef(self) -> float:
        return self._coef if self.controller is None else self.controller.coef

    def state_dict(self) -> dict:
        """The coefficient (which the adaptive controller moves) and the running episodes' lengths, for checkpoints."""
        lengths = None if self.running_lengths is None else self.running_lengths.tolist()
        return {"coef": self.coef, "running_lengths": lengths}

    def load_state_dict(self, state: dict) -> None:
        if self.controller is None:
            self._coef = state["coef"]
        else:
            self.controller.coef = state["coef"]
        lengths = state.get("running_lengths")  # absent in checkpoints of lm-gym <= 0.2
        self.running_lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)

    def _on_training_start(self) -> None:
        policy = self.model.policy
        if not isinstance(policy, LMActorCriticPolicy):
            raise TypeError(f"KLPenaltyCallback needs an LMActorCriticPolicy, got {type(policy).__name__}.")
        if self.reference is None:
            self.reference = policy.load_reference_model()

    def _on_step(self) -> bool:
        return True

    def reference_log_probs(self, buffer: RolloutBuffer) -> np.ndarray:
        """``(n_steps, n_envs)`` log q(action | observation) under the reference LM for a full rollout buffer (packed
        episodes from an episode buffer, windows from SB3's)."""
        n_steps, n_envs = buffer.rewards.shape
        steps = observation_batches(buffer, self.model.policy.device, self.batch_size)
        log_probs = log_probs_in(reference_logits(self.reference, self.model.action_space.n), steps,
                                 env_major(buffer.actions).reshape(-1))
        return log_probs.reshape(n_envs, n_steps).T

    def _on_rollout_end(self) -> None:
        buffer, policy = self.model.rollout_buffer, self.model.policy
        n_steps, n_envs = buffer.rewards.shape
        ref_log_probs = self.reference_log_probs(buffer)
        log_probs = policy_log_probs(policy, buffer, masked=False) if uses_masks(policy, buffer) else buffer.log_probs
        kl = kl_estimate(log_probs - ref_log_probs, self.estimator)  # log p(a|s) - log q(a|s), per token
        coef = self.coef
        buffer.kl_penalties = coef * kl
        buffer.rewards -= buffer.kl_penalties
        dones = np.asarray(self.locals["dones"], dtype=bool)
        buffer.compute_returns_and_advantage(last_values=self.bootstrap_values(), dones=dones)

        ends = np.concatenate([buffer.episode_starts[1:].astype(bool), dones[None]], 0)  # step t ended an episode
        ended, running = self.episode_lengths(ends)
        episodes = episode_equivalents(n_steps * n_envs, ended, running)
        kl_per_episode = float(kl.sum() / episodes)
        if self.controller is not None:
            self.controller.update(kl_per_episode, episodes)
        self.logger.record("kl/per_token", float(kl.mean()))
        self.logger.record("kl/per_episode", kl_per_episode)
        self.logger.record("kl/coef", coef)
        self.logger.record("kl/penalty_per_episode", coef * kl_per_episode)

    @torch.no_grad()
    def bootstrap_values(self) -> torch.Tensor:
        """``V(s_T)``: the values of the observations that follow the rollout (``(n_envs, 1)``)."""
        policy = self.model.policy
        return policy.predict_values(obs_as_tensor(self.model._last_obs, policy.device))

    def episode_lengths(self, ends: np.ndarray) -> tuple[list[int], np.ndarray]:
        """Full lengths of the episodes that ended in this rollout (``ends``: ``(n_steps, n_envs)`` bool), and
        the lengths so far of those still running, which carry over to the next rollout."""
        n_steps, n_envs = ends.shape
        lengths = np.zeros(n_envs, dtype=np.int64) if self.running_lengths is None else self.running_lengths.copy()
        ended: list[int] = []
        for t in range(n_steps):
            lengths += 1
            ended.extend(lengths[ends[t]].tolist())
            lengths[ends[t]] = 0
        self.running_lengths = lengths
        return ended, lengths
