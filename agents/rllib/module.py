"""LMRLModule: the same Hugging Face causal LM and value head as LMActorCriticPolicy, as an RLlib RLModule."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical, TorchDistribution
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, TargetNetworkAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS
from ray.rllib.core.rl_module.torch import TorchRLModule

from agents.lm.actor_critic import LMActorCritic, sample_tokens
from agents.lm.forward import next_token_logits

MODEL_CONFIG_KEYS = ("model", "dtype", "attn_implementation", "autocast_dtype", "lora", "use_kv_cache",
                     "shared_critic")


class LMRLModule(LMActorCritic, TorchRLModule, ValueFunctionAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """An RLModule whose policy is a causal LM's next-token distribution and whose critic is a value head on it.

    Built on :class:`agents.lm.actor_critic.LMActorCritic`, like the SB3 policy: the same LM loading, LoRA and
    precision rules, KV-cached exploration and shared forwards in training. ``model_config`` takes the
    policy's arguments: ``model`` (name or path; ``None``: bundled), ``dtype``, ``attn_implementation``,
    ``autocast_dtype``, ``lora``, ``use_kv_cache``, ``shared_critic``; and ``kl_coef``, the initial coefficient
    of KL shaping (:class:`agents.rllib.kl.KLShaping`).

    - Exploration (env runners, one call per env step for the runner's envs): KV-cached logits, a token
      sampled from them in the module (the same softmax + multinomial as the SB3 policy). RLlib stores each
      step's ``ACTION_DIST_INPUTS`` in the episode and ships it to the learners; full logits would cost
      ``vocab_size`` floats per token (200 KB at 50,257 tokens), so only the sampled token's log-prob is
      stored there (:class:`SampledTokenLogProb`). PPO's optional ``use_kl_loss`` (KL to the previous
      policy) needs the full logits and is refused; lm-gym shapes rewards by the KL to the initial LM instead.
    - Training (learners): all rows that are prefixes of one another (an episode's steps) share one forward;
      ``EMBEDDINGS`` carry the hidden states to ``compute_values``, so the critic costs no second forward.
    - APPO's target network is a frozen copy of the LM (learners only; never sent to env runners).
    """

    framework = "torch"

    def setup(self) -> None:
        if not isinstance(self.action_space, spaces.Discrete) or not isinstance(self.observation_space, spaces.Dict):
            raise ValueError("LMRLModule needs TextGen-v0's spaces: Discrete token actions and a Dict of "
                             f"'input_ids' and 'attention_mask'; got {self.action_space} and {self.observation_space}.")
        # RLlib merges its algorithms' own defaults into model_config (PPO: vf_share_layers); take ours.
        config = {key: value for key, value in (self.model_config or {}).items() if key in MODEL_CONFIG_KEYS}
        self.build_actor_critic(n_actions=int(self.action_space.n), window=self.observation_space["input_ids"].shape[0],
                                **config)
        # The KL-shaping coefficient (agents.rllib.kl): a buffer, so checkpoints and every learner carry it.
        self.register_buffer("kl_coef", torch.tensor(float((self.model_config or {}).get("kl_coef", 0.0))))

    @torch.no_grad()  # RLlib's forward_exploration keeps gradients on; the KV cache needs them off
    def _sample(self, batch: dict[str, Any], deterministic: bool) -> dict[str, Any]:
        logits, _ = self.logits_and_hidden(batch[Columns.OBS], cached=True)
        actions, log_probs = sample_tokens(logits, None, deterministic)
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: log_probs, Columns.ACTION_DIST_INPUTS: log_probs[:, None]}

    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._sample(batch, deterministic=False)

    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._sample(batch, deterministic=True)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        logits, hidden = self.logits_and_hidden(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: hidden}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """``(B,)`` values; from ``embeddings`` (the train forward's hidden states) when given."""
        if embeddings is None:
            embeddings = self.logits_and_hidden(batch[Columns.OBS])[1]
        return self.values(embeddings).squeeze(-1)

    def get_train_action_dist_cls(self) -> type[TorchDistribution]:
        return TorchCategorical

    def get_inference_action_dist_cls(self) -> type[TorchDistribution]:
        return TorchCategorical

    def get_exploration_action_dist_cls(self) -> type[TorchDistribution]:
        return SampledTokenLogProb

    # ----- APPO's target network -----

    def make_target_networks(self) -> None:
        self._target_lm = make_target_network(self.lm)

    def get_target_network_pairs(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.lm, self._target_lm)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        with torch.no_grad(), self.autocast():
            logits, _ = next_token_logits(self._target_lm, batch[Columns.OBS], self.n_actions, hidden=False)
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: logits.float()}

    def get_non_inference_attributes(self) -> list[str]:
        return ["_target_lm"]


class SampledTokenLogProb(TorchDistribution):
    """What an exploration step stores as ``ACTION_DIST_INPUTS``: the log-prob ``(B, 1)`` of the token the
    module sampled, not the vocabulary's logits (see :class:`LMRLModule`). It can be built, as PPO's loss
    builds the previous distribution, but it is not a distribution to sample from or compare."""

    def __init__(self, log_prob: torch.Tensor):
        self.log_prob = log_prob

    @classmethod
    def from_logits(cls, logits: torch.Tensor, **kwargs) -> SampledTokenLogProb:
        return cls(logits)

    def _get_torch_distribution(self, *args, **kwargs):
        raise self._unsupported()

    def logp(self, value: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.log_prob.squeeze(-1)

    def kl(self, other: Any, **kwargs) -> torch.Tensor:
        raise self._unsupported()

    def entropy(self, **kwargs) -> torch.Tensor:
        raise self._unsupported()

    def sample(self, **kwargs) -> torch.Tensor:
        raise self._unsupported()

    def rsample(self, **kwargs) -> torch.Tensor:
        raise self._unsupported()

    @staticmethod
    def required_input_dim(space: spaces.Space, **kwargs) -> int:
        return 1

    @staticmethod
    def _unsupported() -> NotImplementedError:
        return NotImplementedError(
            "LMRLModule stores only the sampled token's log-prob per step (full logits would ship vocab_size "
            "floats per token to the learners), so the old policy's full distribution is not available: "
            "set use_kl_loss=False (lm-gym shapes rewards by the KL to the initial LM: kl_coef / kl_target).")
