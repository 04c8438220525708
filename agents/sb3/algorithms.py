"""The algorithms lm-gym trains on TextGen-v0, each through its stock SB3 / sb3-contrib class.

``make_algorithm("ppo", env, ...)`` builds one with the policy, buffer and defaults that suit an LM.
Hyperparameters are named once, here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from sb3_contrib import TRPO, MaskablePPO, QRDQN
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from agents.sb3.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.sb3.policy import LMActorCriticPolicy
from agents.sb3.q_policy import LMDQNPolicy, LMQRDQNPolicy


@dataclass(frozen=True)
class AlgorithmSpec:
    cls: type[BaseAlgorithm]
    policy: type
    kwargs: dict[str, Any] = field(default_factory=dict)  # algorithm arguments
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    on_policy: bool = True  # rollouts + KLPenaltyCallback apply

    @property
    def learning_rate(self) -> float:
        return self.kwargs["learning_rate"]


ON_POLICY = dict(n_steps=64, gamma=1.0, gae_lambda=0.95, learning_rate=1e-4)
# Exploration samples tokens from softmax(Q) (LMQNetwork._predict), so epsilon-greedy is off.
OFF_POLICY = dict(buffer_size=20_000, learning_starts=256, batch_size=64, train_freq=4, gradient_steps=1,
                  target_update_interval=500, exploration_initial_eps=0.0, exploration_final_eps=0.0, gamma=1.0,
                  learning_rate=1e-5)

ALGORITHMS: dict[str, AlgorithmSpec] = {
    "ppo": AlgorithmSpec(PPO, LMActorCriticPolicy, dict(ON_POLICY, batch_size=128, n_epochs=4,
                                                        rollout_buffer_class=EpisodeRolloutBuffer)),
    # A2C's default RMSprop(lr=7e-4) is tuned for small MLPs; an LM wants Adam at a fine-tuning rate.
    "a2c": AlgorithmSpec(A2C, LMActorCriticPolicy, dict(ON_POLICY, n_steps=16, rollout_buffer_class=EpisodeRolloutBuffer),
                         dict(optimizer_class=torch.optim.Adam, optimizer_kwargs={"eps": 1e-5})),
    # NLPO: PPO restricted to the top-p nucleus of a delayed copy of the policy.
    "maskable_ppo": AlgorithmSpec(MaskablePPO, LMActorCriticPolicy,
                                  dict(ON_POLICY, batch_size=128, n_epochs=4,
                                       rollout_buffer_class=MaskableEpisodeRolloutBuffer),
                                  dict(top_p_mask=0.9, mask_update_interval=5)),
    # TRPO differentiates twice through attention: fused kernels have no double backward.
    # learning_rate is its critic's; the critic must not move the LM (see shared_critic).
    "trpo": AlgorithmSpec(TRPO, LMActorCriticPolicy, dict(ON_POLICY, batch_size=128, learning_rate=1e-3,
                                                          target_kl=0.02, rollout_buffer_class=EpisodeRolloutBuffer),
                          dict(attn_implementation="eager", shared_critic=False)),
    "dqn": AlgorithmSpec(DQN, LMDQNPolicy, dict(OFF_POLICY), on_policy=False),
    "qrdqn": AlgorithmSpec(QRDQN, LMQRDQNPolicy, dict(OFF_POLICY), dict(n_quantiles=16), on_policy=False),
}


def make_algorithm(name: str, env: VecEnv, model: str | None = None, seed: int | None = None, device: str = "auto",
                   verbose: int = 0, **overrides: Any) -> BaseAlgorithm:
    """Build algorithm ``name`` on ``env`` with the LM ``model``; ``overrides`` replace its defaults."""
    if name not in ALGORITHMS:
        raise ValueError(f"algo={name!r}: choose one of {sorted(ALGORITHMS)}.")
    spec = ALGORITHMS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    accepted = inspect.signature(spec.cls.__init__).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} do(es) not apply to algo={name!r} ({spec.cls.__name__}).")
    kwargs = {**spec.kwargs, **overrides}
    policy_kwargs = {"model": model, **spec.policy_kwargs, **kwargs.pop("policy_kwargs", {})}
    return spec.cls(spec.policy, env, seed=seed, device=device, verbose=verbose, policy_kwargs=policy_kwargs, **kwargs)
