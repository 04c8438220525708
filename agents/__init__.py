"""Stable-Baselines3 integration: LM policies for every algorithm, KL shaping, fast paths, training, comparison."""

from agents.algorithms import ALGORITHMS, make_algorithm
from agents.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.compare import LearningCurveCallback, compare
from agents.evaluation import Episode, distinct_n, sample_episodes, summarize
from agents.kl import AdaptiveKLController, KLPenaltyCallback
from agents.kv_cache import RolloutKVCache
from agents.lm_forward import next_token_logits
from agents.nlpo import TopPMask
from agents.policy import LMActorCriticPolicy
from agents.q_policy import LMDQNPolicy, LMQNetwork, LMQRDQNPolicy
from agents.train import TrainConfig, train

__all__ = [
    "ALGORITHMS", "AdaptiveKLController", "Episode", "EpisodeRolloutBuffer", "KLPenaltyCallback",
    "LMActorCriticPolicy", "LMDQNPolicy", "LMQNetwork", "LMQRDQNPolicy", "LearningCurveCallback",
    "MaskableEpisodeRolloutBuffer", "RolloutKVCache", "TopPMask", "TrainConfig", "compare", "distinct_n",
    "make_algorithm", "next_token_logits", "sample_episodes", "summarize", "train",
]
