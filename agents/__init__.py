"""Stable-Baselines3 integration: an LM actor-critic policy, KL shaping, evaluation and training."""

from agents.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.evaluation import Episode, sample_episodes, summarize
from agents.kl import AdaptiveKLController, KLPenaltyCallback
from agents.kv_cache import RolloutKVCache
from agents.lm_forward import next_token_logits
from agents.policy import LMActorCriticPolicy
from agents.q_policy import LMDQNPolicy, LMQNetwork, LMQRDQNPolicy
from agents.train import TrainConfig, train

__all__ = [
    "AdaptiveKLController", "Episode", "EpisodeRolloutBuffer", "KLPenaltyCallback", "LMActorCriticPolicy", "LMDQNPolicy", "LMQNetwork", "LMQRDQNPolicy", "MaskableEpisodeRolloutBuffer", "RolloutKVCache", "TrainConfig",
    "next_token_logits", "sample_episodes", "summarize", "train",
]
