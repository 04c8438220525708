"""Stable-Baselines3 integration: an LM actor-critic policy, KL shaping, evaluation and training."""

from agents.evaluation import Episode, sample_episodes, summarize
from agents.kl import AdaptiveKLController, KLPenaltyCallback
from agents.policy import LMActorCriticPolicy, next_token_logits
from agents.train import TrainConfig, train

__all__ = [
    "AdaptiveKLController", "Episode", "KLPenaltyCallback", "LMActorCriticPolicy", "TrainConfig",
    "next_token_logits", "sample_episodes", "summarize", "train",
]
