"""lm-gym's training side, by layer (dependencies point one way: runs -> sb3 | rllib -> lm -> lm_gym):

- ``agents.lm``: backend-agnostic LM plumbing (forwards, KV cache, actor-critic core, KL, LoRA);
- ``agents.sb3``: the Stable-Baselines3 backend (policies, buffers, KL callback, NLPO, registry);
- ``agents.rllib``: the Ray RLlib backend (RLModule, KL connector, algorithm configs; ``lm-gym[rllib]``);
- ``agents.runs``: ``lm-gym train``/``evaluate``/``compare``, run directories and checkpoints.
"""

import importlib
import importlib.abc
import importlib.util
import sys

# The public API and the module that defines each name, imported on first use (PEP 562): ``import agents.lm.forward``
# loads no run layer, and ``lm-gym --help`` no torch.
EXPORTS = {
    "agents.lm.actor_critic": ["LMActorCritic", "sample_tokens"],
    "agents.lm.forward": ["next_token_logits"],
    "agents.lm.kl": ["AdaptiveKLController"],
    "agents.lm.kv_cache": ["RolloutKVCache"],
    "agents.lm.lora": ["AdaptersDisabled", "add_lora", "merged_copy"],
    "agents.runs.checkpoints": ["CheckpointError", "ResumableCheckpointCallback", "load_checkpoint", "save_checkpoint",
                                "CheckpointCallback"],  # the last: lm-gym <= 0.3's name, with a DeprecationWarning
    "agents.runs.compare": ["compare"],
    "agents.runs.progress": ["LearningCurveCallback"],
    "agents.runs.evaluate": ["evaluate_run"],
    "agents.runs.samples": ["Episode", "distinct_n", "sample_episodes", "summarize"],
    "agents.runs.train": ["TrainConfig", "train"],
    "agents.sb3.algorithms": ["ALGORITHMS", "make_algorithm"],
    "agents.sb3.buffers": ["EpisodeRolloutBuffer", "MaskableEpisodeRolloutBuffer"],
    "agents.sb3.group_advantages": ["GroupAdvantageCallback", "outcome_advantages"],
    "agents.sb3.kl": ["KLPenaltyCallback"],
    "agents.sb3.nlpo": ["TopPMask"],
    "agents.sb3.policy": ["LMActorCriticPolicy", "LMTRPOPolicy"],
    "agents.sb3.q_policy": ["LMDQNPolicy", "LMQNetwork", "LMQRDQNPolicy"],
    "agents.sb3.rollout_log_probs": ["RecomputeLogProbsCallback"],
    "agents.sb3.sample_logging": ["SampleLogCallback"],
}
_MODULE_OF = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(set(_MODULE_OF) - {"CheckpointCallback"})


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    if name != "CheckpointCallback":  # the deprecated name warns on every use
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """SB3's model.zip names the policy and buffer classes by module path; zips saved by lm-gym 0.1 (flat agents/)
    say ``agents.policy``, ``agents.q_policy``, ``agents.buffers``. Importing those names gives the modules that
    hold the classes now (on demand, so nothing is loaded before a model is)."""

    MOVED = {"agents.policy": "agents.sb3.policy", "agents.q_policy": "agents.sb3.q_policy",
             "agents.buffers": "agents.sb3.buffers"}

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name in self.MOVED else None

    def create_module(self, spec):
        return importlib.import_module(self.MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # the module it stands for ran already


if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(MovedModules())

# "LMPolicy" is registered on SB3's classes by importing agents.sb3 (any name from it does). Where SB3 is loaded
# already, as when RL Baselines3 Zoo imports its --gym-packages, `import agents` registers it too.
if "stable_baselines3" in sys.modules:
    importlib.import_module("agents.sb3")
