"""LMActorCriticPolicy: a Hugging Face causal LM as an SB3 actor-critic policy."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from transformers import PreTrainedModel

from agents.kv_cache import RolloutKVCache
from agents.lm_forward import next_token_logits
from lm_gym.models import ModelRef, load_causal_lm, load_tokenizer, resolve_model


class LMActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy whose actor is a causal LM and whose critic is a linear value head on it.

    The action distribution is ``Categorical(logits=lm(obs).logits[:, -1])``: sampling an action is
    sampling the LM's next token. The value head reads the LM's last hidden state at the same position.
    Works unchanged with stock ``PPO`` and ``A2C`` on ``TextGen-v0`` (its Dict observation of left-padded
    ``input_ids`` + ``attention_mask``)::

        PPO(LMActorCriticPolicy, env, policy_kwargs={"model": "gpt2"})

    Args:
        model: Hugging Face name or local path of the causal LM (``None``: the bundled tiny LM). Kept as
            a plain string so that ``PPO.load`` rebuilds the policy from it and then loads the weights.
        dtype: weight dtype of the LM (e.g. ``"bfloat16"``); logits are always cast to float32.
        attn_implementation: passed to ``from_pretrained`` (``"eager"`` for second-order methods).
        autocast_dtype: run the LM under ``torch.autocast`` in this dtype (``"bfloat16"``); the action
            distribution is still computed from float32 logits.
        use_kv_cache: during rollouts, reuse each env's keys/values from the previous step (exact: a row
            is only continued when its ids prove it grew by one token).
        group_episodes: in the update, compute all steps of an episode with one forward when the
            minibatch holds them in order (use ``rollout_buffer_class=EpisodeRolloutBuffer``).
        **kwargs: the usual ``ActorCriticPolicy`` arguments; the MLP ones (``net_arch``, ``activation_fn``)
            have no effect, and ``ortho_init`` is forced off because it would overwrite pretrained weights.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: ModelRef = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        autocast_dtype: str | None = None,
        use_kv_cache: bool = True,
        group_episodes: bool = True,
        **kwargs: Any,
    ):
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"LMActorCriticPolicy needs a Discrete action space (token ids), got {action_space}.")
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != {
            "input_ids", "attention_mask"
        }:
            raise ValueError(
                "LMActorCriticPolicy needs TextGen-v0's observation space, a Dict of 'input_ids' and "
                f"'attention_mask'; got {observation_space}."
            )
        self.model_name = None if model is None else str(model)
        self.lm_dtype = dtype
        self.attn_implementation = attn_implementation
        self.autocast_dtype = autocast_dtype
        self.use_kv_cache, self.group_episodes = use_kv_cache, group_episodes
        self.kv_cache = RolloutKVCache()
        kwargs["ortho_init"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        self.lm = load_causal_lm(self.model_name, dtype=self.lm_dtype, attn_implementation=self.attn_implementation)
        lm_vocab = self.lm.get_output_embeddings().out_features
        if self.action_space.n > lm_vocab:
            raise ValueError(
                f"the env's vocabulary has {self.action_space.n} tokens but model={resolve_model(self.model_name)!r} "
                f"has {lm_vocab} output logits; use the tokenizer that belongs to the model."
            )
        window = self.observation_space["input_ids"].shape[0]
        max_positions = getattr(self.lm.config, "max_position_embeddings", None)
        if max_positions is not None and window > max_positions:
            raise ValueError(
                f"the env's window of {window} tokens (max_prompt_tokens + max_new_tokens) is longer than "
                f"model={resolve_model(self.model_name)!r} can attend to ({max_positions} positions); "
                "lower max_new_tokens or max_prompt_tokens."
            )
        self._lm_parameters = list(self.lm.parameters())  # walked on every rollout step: list it once
        hidden_size = self.lm.get_input_embeddings().embedding_dim
        # Named "value_*" so that sb3-contrib's TRPO leaves it out of its actor step.
        self.value_head = nn.Linear(hidden_size, 1, dtype=self.lm.dtype)
        nn.init.normal_(self.value_head.weight, std=1 / (hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype, attn_implementation=self.attn_implementation,
                    autocast_dtype=self.autocast_dtype, use_kv_cache=self.use_kv_cache,
                    group_episodes=self.group_episodes)
        return data

    def set_training_mode(self, mode: bool) -> None:
        super().set_training_mode(mode)
        if mode:  # the update will change the weights (the version check would drop the cache anyway):
            self.kv_cache.reset()  # free its memory for the update's activations now

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, self.autocast_dtype))

    def _distribution_and_values(self, obs: PyTorchObs) -> tuple[CategoricalDistribution, torch.Tensor]:
        if self.use_kv_cache and not torch.is_grad_enabled():
            # In-place updates (optimizer steps, load_state_dict) bump these counters: a changed sum
            # means changed weights, and the cache is dropped.
            version = sum(p._version for p in self._lm_parameters)
            logits, hidden = self.kv_cache(self.lm, obs, self.action_space.n, version, self._autocast())
        else:
            with self._autocast():
                logits, hidden = next_token_logits(self.lm, obs, self.action_space.n, group=self.group_episodes)
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).float()
        return self.action_dist.proba_distribution(action_logits=logits.float()), values

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample next tokens. Returns actions ``(B,)``, values ``(B, 1)`` and log-probs ``(B,)``."""
        distribution, values = self._distribution_and_values(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values ``(B, 1)``, log-probs ``(B,)`` and entropies ``(B,)`` of ``actions`` under the current LM."""
        distribution, values = self._distribution_and_values(obs)
        return values, distribution.log_prob(actions.reshape(-1)), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> CategoricalDistribution:
        return self._distribution_and_values(obs)[0]

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        return self._distribution_and_values(obs)[1]

    def load_reference_model(self) -> PreTrainedModel:
        """A frozen copy of the initial LM (reloaded from ``model``), on this policy's device, for KL terms."""
        reference = load_causal_lm(self.model_name, dtype=self.lm_dtype, attn_implementation=self.attn_implementation)
        return reference.to(self.device).eval().requires_grad_(False)

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the LM and its tokenizer in Hugging Face format (``from_pretrained``/``pipeline`` load it).

        Refuses a non-empty directory unless ``overwrite=True``, so nothing saved earlier is lost.
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} is not empty; choose a new directory or pass overwrite=True.")
        self.lm.save_pretrained(path)
        load_tokenizer(self.model_name).save_pretrained(path)
        return path
