"""KLPenaltyCallback: per-token KL-to-reference reward shaping for SB3's on-policy algorithms."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from agents.lm.kl import AdaptiveKLController, check_kl_arguments, kl_estimate, reference_log_probs
from agents.sb3.policy import LMActorCriticPolicy


class KLPenaltyCallback(BaseCallback):
    """Subtract ``coef * KL(policy || initial LM)`` from every token's reward, then recompute advantages.

    SB3 computes returns and advantages just before ``on_rollout_end``; this callback scores each stored
    (observation, token) with a frozen reference LM, shapes the buffer's rewards and calls
    ``compute_returns_and_advantage`` again, so stock PPO/A2C optimise ``reward - coef * KL``.
    ``rollout/ep_rew_mean`` stays the task reward; ``kl/*`` entries go to SB3's logger.

    Args:
        coef: KL coefficient (the initial one when ``target`` is set).
        target: target KL per episode, in nats; ``None`` keeps ``coef`` fixed.
        horizon: the adaptive controller's horizon, in env steps.
        estimator: ``"k1"`` (``log p - log q``, unbiased) or ``"k3"`` (``(r - 1) - log r``, ``r = q / p``,
            never negative, lower variance).
        batch_size: observations per reference forward.
    """

    def __init__(self, coef: float = 0.05, target: float | None = None, horizon: int = 10_000,
                 estimator: str = "k1", batch_size: int = 512, verbose: int = 0):
        super().__init__(verbose)
        check_kl_arguments(coef, estimator)
        self.controller = None if target is None else AdaptiveKLController(coef, target, horizon)
        self._coef = coef
        self.estimator, self.batch_size = estimator, batch_size
        self.reference: nn.Module | None = None

    @property
    def coef(self) -> float:
        return self._coef if self.controller is None else self.controller.coef

    def state_dict(self) -> dict:
        """The coefficient (which the adaptive controller moves), for checkpoints."""
        return {"coef": self.coef}

    def load_state_dict(self, state: dict) -> None:
        if self.controller is None:
            self._coef = state["coef"]
        else:
            self.controller.coef = state["coef"]

    def _on_training_start(self) -> None:
        policy = self.model.policy
        if not isinstance(policy, LMActorCriticPolicy):
            raise TypeError(f"KLPenaltyCallback needs an LMActorCriticPolicy, got {type(policy).__name__}.")
        if self.reference is None:
            self.reference = policy.load_reference_model()

    def _on_step(self) -> bool:
        return True

    def reference_log_probs(self, observations: dict[str, np.ndarray], actions: np.ndarray) -> np.ndarray:
        """log q(action | observation) under the reference LM for flat arrays of N observations."""
        return reference_log_probs(self.reference, observations, actions, self.model.action_space.n,
                                   self.model.policy.device, self.batch_size)

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        n_steps, n_envs = buffer.rewards.shape
        # Env-major rows put each episode's steps next to each other: one reference forward per episode.
        flat = {key: value.swapaxes(0, 1).reshape(n_envs * n_steps, -1) for key, value in buffer.observations.items()}
        actions = buffer.actions.swapaxes(0, 1).reshape(-1)
        ref_log_probs = self.reference_log_probs(flat, actions).reshape(n_envs, n_steps).T
        log_ratio = buffer.log_probs - ref_log_probs  # log p(a|s) - log q(a|s), per token
        kl = kl_estimate(log_ratio, self.estimator)
        coef = self.coef
        buffer.rewards -= coef * kl
        buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])

        # Episodes in this rollout: each episode start, plus the ones already running when it began.
        episodes = max(1.0, float(buffer.episode_starts[1:].sum() + n_envs))
        kl_per_episode = float(kl.sum() / episodes)
        if self.controller is not None:
            self.controller.update(kl_per_episode, n_steps * n_envs)
        self.logger.record("kl/per_token", float(kl.mean()))
        self.logger.record("kl/per_episode", kl_per_episode)
        self.logger.record("kl/coef", coef)
        self.logger.record("kl/penalty_per_episode", coef * kl_per_episode)
