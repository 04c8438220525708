"""The algorithms lm-gym trains on TextGen-v0, each through its stock SB3 / sb3-contrib class.

``make_algorithm("ppo", env, ...)`` builds one with the policy, buffer and defaults that suit an LM.
Hyperparameters are named once, here. The critic-free ones (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce``)
are stock ``PPO`` too; they train on ``lm_gym.make_vec_env(group_size=spec.group_size)`` with
``GroupAdvantageCallback(spec.advantage)`` (``lm-gym train`` does both).
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
from agents.sb3.policy import LMActorCriticPolicy, LMTRPOPolicy
from agents.sb3.q_policy import LMDQNPolicy, LMQRDQNPolicy


@dataclass(frozen=True)
class AlgorithmSpec:
    cls: type[BaseAlgorithm]
    policy: type
    kwargs: dict[str, Any] = field(default_factory=dict)  # algorithm arguments
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    on_policy: bool = True  # rollouts + KLPenaltyCallback apply
    advantage: str | None = None  # a critic-free estimator (GroupAdvantageCallback); None: the algorithm's own
    group_size: int = 1  # completions per prompt in the env (lm_gym.make_vec_env(group_size=...))

    @property
    def learning_rate(self) -> float:
        return self.kwargs["learning_rate"]


ON_POLICY = dict(n_steps=64, gamma=1.0, gae_lambda=0.95, learning_rate=1e-4)
# Exploration samples tokens from softmax(Q) (LMQNetwork._predict), so epsilon-greedy is off.
OFF_POLICY = dict(buffer_size=20_000, learning_starts=256, batch_size=64, train_freq=4, gradient_steps=1,
                  target_update_interval=500, exploration_initial_eps=0.0, exploration_final_eps=0.0, gamma=1.0,
                  learning_rate=1e-5)

# Critic-free PPO (GroupAdvantageCallback): no value loss, the estimator's own advantage scale, and rollouts
# several episodes long, since episodes cut at a rollout's edges do not count (see agents.sb3.group_advantages).
CRITIC_FREE = dict(ON_POLICY, batch_size=128, n_epochs=4, vf_coef=0.0, normalize_advantage=False,
                   rollout_buffer_class=EpisodeRolloutBuffer)

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
    "grpo": AlgorithmSpec(PPO, LMActorCriticPolicy, CRITIC_FREE, advantage="grpo", group_size=4),
    "dr_grpo": AlgorithmSpec(PPO, LMActorCriticPolicy, CRITIC_FREE, advantage="dr_grpo", group_size=4),
    "rloo": AlgorithmSpec(PPO, LMActorCriticPolicy, CRITIC_FREE, advantage="rloo", group_size=4),
    "reinforce": AlgorithmSpec(PPO, LMActorCriticPolicy, CRITIC_FREE, advantage="reinforce"),
    "dqn": AlgorithmSpec(DQN, LMDQNPolicy, dict(OFF_POLICY), on_policy=False),
    "qrdqn": AlgorithmSpec(QRDQN, LMQRDQNPolicy, dict(OFF_POLICY), dict(n_quantiles=16), on_policy=False),
}


POLICY_ALIAS = "LMPolicy"


def register_policy_aliases() -> None:
    """Let every algorithm take the LM policy by name, as SB3 users write ``PPO("MlpPolicy", env)``:
    ``PPO("LMPolicy", env, policy_kwargs={"model": "gpt2"})``. SB3 looks a string policy up in the class's
    ``policy_aliases``; each class gets a new dict (its own, not a shared parent's), with the alias and the
    policy's class name."""
    for cls, policy in ((PPO, LMActorCriticPolicy), (A2C, LMActorCriticPolicy), (MaskablePPO, LMActorCriticPolicy),
                        (TRPO, LMTRPOPolicy), (DQN, LMDQNPolicy), (QRDQN, LMQRDQNPolicy)):
        cls.policy_aliases = {**cls.policy_aliases, POLICY_ALIAS: policy, policy.__name__: policy}


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
