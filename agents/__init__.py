"""lm-gym's training side, by layer (dependencies point one way: runs -> sb3 | rllib -> lm -> lm_gym):

- ``agents.lm``: backend-agnostic LM plumbing (forwards, KV cache, actor-critic core, KL, LoRA);
- ``agents.sb3``: the Stable-Baselines3 backend (policies, buffers, KL callback, NLPO, registry);
- ``agents.rllib``: the Ray RLlib backend (RLModule, KL connector, algorithm configs; ``lm-gym[rllib]``);
- ``agents.runs``: ``lm-gym train``/``evaluate``/``compare``, run directories and checkpoints.
"""

import sys

from agents.lm.actor_critic import LMActorCritic, sample_tokens
from agents.lm.forward import next_token_logits
from agents.lm.kl import AdaptiveKLController
from agents.lm.kv_cache import RolloutKVCache
from agents.lm.lora import AdaptersDisabled, add_lora, merged_copy
from agents.runs import checkpoints as _checkpoints
from agents.runs.checkpoints import CheckpointError, ResumableCheckpointCallback, load_checkpoint, save_checkpoint
from agents.runs.compare import compare
from agents.runs.progress import LearningCurveCallback
from agents.runs.evaluate import evaluate_run
from agents.runs.samples import Episode, distinct_n, sample_episodes, summarize
from agents.runs.train import TrainConfig, train
from agents.sb3 import buffers, policy, q_policy
from agents.sb3.algorithms import ALGORITHMS, make_algorithm
from agents.sb3.buffers import EpisodeRolloutBuffer, MaskableEpisodeRolloutBuffer
from agents.sb3.group_advantages import GroupAdvantageCallback, outcome_advantages
from agents.sb3.kl import KLPenaltyCallback
from agents.sb3.nlpo import TopPMask
from agents.sb3.policy import LMActorCriticPolicy, LMTRPOPolicy
from agents.sb3.q_policy import LMDQNPolicy, LMQNetwork, LMQRDQNPolicy
from agents.sb3.rollout_log_probs import RecomputeLogProbsCallback
from agents.sb3.sample_logging import SampleLogCallback

# SB3's model.zip names the policy and buffer classes by module path; zips saved by lm-gym 0.1 (flat agents/)
# say agents.policy, agents.q_policy, agents.buffers. These aliases keep them loading.
sys.modules.update({"agents.policy": policy, "agents.q_policy": q_policy, "agents.buffers": buffers})

__all__ = [
    "ALGORITHMS", "AdaptersDisabled", "AdaptiveKLController", "CheckpointError", "Episode",
    "EpisodeRolloutBuffer", "GroupAdvantageCallback", "KLPenaltyCallback", "LMActorCritic", "LMActorCriticPolicy",
    "LMDQNPolicy", "LMQNetwork", "LMQRDQNPolicy", "LMTRPOPolicy", "LearningCurveCallback", "MaskableEpisodeRolloutBuffer",
    "RecomputeLogProbsCallback", "ResumableCheckpointCallback", "RolloutKVCache", "SampleLogCallback", "TopPMask", "TrainConfig", "add_lora", "compare", "distinct_n",
    "evaluate_run", "load_checkpoint", "make_algorithm", "merged_copy", "next_token_logits", "outcome_advantages",
    "sample_episodes", "sample_tokens", "save_checkpoint", "summarize", "train",
]


def __getattr__(name: str):
    if name == "CheckpointCallback":  # the old name, kept importable with a DeprecationWarning
        return getattr(_checkpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
