"""Stable-Baselines3 integration: LM policies for every algorithm, KL shaping, fast paths, training, comparison."""

from agents.algorithms import ALGORITHMS, make_algorithm
from agents.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.checkpoints import CheckpointCallback, CheckpointError, load_checkpoint, save_checkpoint
from agents.compare import LearningCurveCallback, compare
from agents.evaluate import evaluate_run
from agents.evaluation import Episode, distinct_n, sample_episodes, summarize
from agents.kl import AdaptiveKLController, KLPenaltyCallback
from agents.kv_cache import RolloutKVCache
from agents.lora import AdaptersDisabled, add_lora, merged_copy
from agents.lm_forward import next_token_logits
from agents.nlpo import TopPMask
from agents.policy import LMActorCriticPolicy
from agents.q_policy import LMDQNPolicy, LMQNetwork, LMQRDQNPolicy
from agents.sample_logging import SampleLogCallback
from agents.train import TrainConfig, train

__all__ = [
    "ALGORITHMS", "AdaptersDisabled", "AdaptiveKLController", "CheckpointCallback", "CheckpointError", "Episode",
    "EpisodeRolloutBuffer", "KLPenaltyCallback", "LMActorCriticPolicy", "LMDQNPolicy", "LMQNetwork", "LMQRDQNPolicy",
    "LearningCurveCallback", "MaskableEpisodeRolloutBuffer", "RolloutKVCache", "SampleLogCallback", "TopPMask",
    "TrainConfig", "add_lora", "compare", "distinct_n", "evaluate_run", "load_checkpoint", "make_algorithm",
    "merged_copy", "next_token_logits", "sample_episodes", "save_checkpoint", "summarize", "train",
]
