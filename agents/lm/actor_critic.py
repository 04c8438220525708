"""The actor-critic around a causal LM that both training backends share.

:class:`LMActorCritic` is a mixin for an ``nn.Module`` host: SB3's :class:`agents.LMActorCriticPolicy` and
RLlib's :class:`agents.rllib.LMRLModule` call :meth:`LMActorCritic.build_actor_critic` when they build
themselves and then use the same forward paths, sampling, KL reference and Hugging Face export. What
differs between the backends (SB3's masks and buffers, RLlib's batch columns) stays in their packages.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from agents.lm.forward import Observation, SharedForwards, next_token_logits
from agents.lm.kv_cache import RolloutKVCache
from agents.lm.lora import AdaptersDisabled, add_lora, merged_copy
from lm_gym.models import ModelRef, load_causal_lm, load_frozen_lm, resolve_model, save_pretrained

HALF_PRECISION_ADVICE = ("Without loss scaling (SB3 and RLlib apply none) float16 gradients and Adam updates "
                         "underflow. Use 'bfloat16' (same memory, float32's range), or LoRA (lora={...}) with "
                         "dtype='float16': the float16 base stays frozen and the adapters train in float32.")


def check_precision(dtype: str | None, autocast_dtype: str | None, lora: dict[str, Any] | None) -> None:
    """Refuse dtypes that are not torch floating types, and float16 where it would be trained."""
    for name, value in (("dtype", dtype), ("autocast_dtype", autocast_dtype)):
        if value is not None and not (isinstance(getattr(torch, str(value), None), torch.dtype)
                                      and getattr(torch, value).is_floating_point):
            raise ValueError(f"{name}={value!r} is not a torch floating dtype; use 'bfloat16', 'float16' or 'float32'.")
    if dtype == "float16" and lora is None:
        raise ValueError(f"dtype='float16' without lora trains float16 weights: {HALF_PRECISION_ADVICE}")
    if autocast_dtype == "float16":
        raise ValueError(f"autocast_dtype='float16' trains through float16 activations: {HALF_PRECISION_ADVICE}")


class LMActorCritic:
    """Actor: the LM's next-token logits (float32). Critic: a linear ``value_head`` on its last hidden state.

    Attributes set by :meth:`build_actor_critic`: ``lm`` (the transformers model, or its peft wrapper with
    LoRA), ``value_head`` (float32 ``nn.Linear(hidden, 1)``; named ``value_*`` because sb3-contrib's TRPO
    leaves such parameters out of its actor step), ``kv_cache`` (the rollout cache) and the settings.
    """

    lm: nn.Module
    value_head: nn.Linear
    kv_cache: RolloutKVCache

    def build_actor_critic(self, n_actions: int, window: int, model: ModelRef = None, dtype: str | None = None,
                           attn_implementation: str | None = None, autocast_dtype: str | None = None,
                           lora: dict[str, Any] | None = None, use_kv_cache: bool = True,
                           shared_critic: bool = True) -> None:
        """Load the LM (``model``: a Hugging Face name or path; ``None``: the bundled LM) for an env whose
        vocabulary has ``n_actions`` tokens and whose observations are ``window`` tokens wide."""
        check_precision(dtype, autocast_dtype, lora)
        self.model_name = None if model is None else str(model)
        self.lm_dtype, self.attn_implementation, self.autocast_dtype = dtype, attn_implementation, autocast_dtype
        self.lora, self.use_kv_cache, self.shared_critic = lora, use_kv_cache, shared_critic
        self.lm = load_causal_lm(self.model_name, dtype=dtype, attn_implementation=attn_implementation)
        lm_vocab = self.lm.get_output_embeddings().out_features
        if lora is not None:
            self.lm = add_lora(self.lm, lora)
        name = resolve_model(self.model_name)
        if n_actions > lm_vocab:
            raise ValueError(f"the env's vocabulary has {n_actions} tokens but model={name!r} has {lm_vocab} output "
                             "logits; use the tokenizer that belongs to the model.")
        max_positions = getattr(self.lm.config, "max_position_embeddings", None)
        if max_positions is not None and window > max_positions:
            raise ValueError(
                f"the env's window of {window} tokens (TextGen-v0: max_prompt_tokens + max_new_tokens; multi-turn "
                f"envs: max_tokens) is longer than model={name!r} can attend to ({max_positions} positions); lower "
                f"max_new_tokens or max_prompt_tokens (multi-turn: max_tokens={max_positions} or less, or leave it "
                "unset: it then fits the env's model).")
        self.n_actions = n_actions
        self._lm_parameters = list(self.lm.parameters())  # walked on every rollout step: list it once
        hidden_size = self.lm.get_input_embeddings().embedding_dim
        # Float32 whatever the LM's dtype: it is tiny, and Adam on half-precision weights loses small updates.
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1 / (hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)
        self.kv_cache = RolloutKVCache()

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        device_type = next(iter(self._lm_parameters)).device.type
        return torch.autocast(device_type=device_type, dtype=getattr(torch, self.autocast_dtype))

    def lm_weights_version(self) -> int:
        """Changes whenever the LM's weights change in place (optimizer steps, ``load_state_dict``): the sum
        of the parameters' version counters. A changed version drops the rollout cache."""
        return sum(p._version for p in self._lm_parameters)

    def logits_and_values(self, obs: Observation, cached: bool = False, plan: SharedForwards | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 next-token logits ``(B, n_actions)`` and values ``(B, 1)``.

        ``cached``: the per-step rollout path (no gradients): the KV cache continues each row from the last
        call. Otherwise one forward serves every row that is a prefix of another (``plan``, default
        :func:`agents.lm.forward.shared_forwards`).
        """
        logits, hidden = self.logits_and_hidden(obs, cached, plan)
        return logits, self.values(hidden)

    def logits_and_hidden(self, obs: Observation, cached: bool = False, plan: SharedForwards | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 next-token logits ``(B, n_actions)`` and the last hidden states ``(B, H)`` the critic reads."""
        if cached and self.use_kv_cache and not torch.is_grad_enabled():
            logits, hidden = self.kv_cache(self.lm, obs, self.n_actions, self.lm_weights_version(), self.autocast())
        else:
            with self.autocast():
                logits, hidden = next_token_logits(self.lm, obs, self.n_actions, plan)
        return logits.float(), hidden

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, 1)`` float32 values from last hidden states ``(B, H)``; without ``shared_critic`` the value
        loss trains only the head."""
        critic_input = hidden if self.shared_critic else hidden.detach()
        return self.value_head(critic_input.to(self.value_head.weight.dtype)).float()

    @torch.no_grad()
    def token_distribution(self, obs: Observation, cached: bool = False) -> torch.distributions.Categorical:
        """The next-token distribution (no masks), for sampling completions outside training. ``cached``: through
        the rollout KV cache (successive calls on the same rows, each grown or unchanged)."""
        return torch.distributions.Categorical(logits=self.logits_and_values(obs, cached=cached)[0])

    def token_distributions(self, obs: Observation, cached: bool = False
                            ) -> tuple[torch.distributions.Categorical, torch.distributions.Categorical]:
        """(the distribution tokens are sampled from, the one the KL to the reference is taken on): the same
        here; the SB3 policy's differ under NLPO masks."""
        distribution = self.token_distribution(obs, cached)
        return distribution, distribution

    def load_reference_model(self) -> nn.Module:
        """The initial LM, frozen, for KL terms: with LoRA the same LM with its adapters disabled (no second
        copy), otherwise a copy reloaded from ``model`` onto the LM's device."""
        if self.lora is not None:
            return AdaptersDisabled(self.lm)
        return load_frozen_lm(self.model_name, next(iter(self._lm_parameters)).device, dtype=self.lm_dtype,
                              attn_implementation=self.attn_implementation)

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the LM (LoRA adapters merged in) and its tokenizer in Hugging Face format (``from_pretrained``,
        ``pipeline``); refuses a non-empty directory."""
        lm = merged_copy(self.lm) if self.lora is not None else self.lm
        return save_pretrained(lm, self.model_name, path, overwrite)


MASKED_LOGIT = -1e8  # what sb3-contrib's MaskableCategorical puts at masked tokens


def sample_tokens(logits: torch.Tensor, masks: torch.Tensor | None, deterministic: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``(B,)`` and their log-probs ``(B,)`` from float32 logits ``(B, n)``, without distribution objects.

    The same operations as sb3-contrib's ``MaskableCategorical`` (masked logits, normalised by logsumexp,
    softmax, ``torch.multinomial``; the mode is the argmax of the probabilities): the same random stream
    gives the same tokens. Skipping the two distribution objects and their argument validation is what
    makes it cheaper on the per-step rollout path.
    """
    if masks is not None:
        logits = torch.where(masks, logits, torch.tensor(MASKED_LOGIT, dtype=logits.dtype, device=logits.device))
    log_probs = logits - logits.logsumexp(-1, keepdim=True)
    probs = torch.softmax(log_probs, -1)
    actions = probs.argmax(-1) if deterministic else torch.multinomial(probs, 1, True).squeeze(1)
    return actions, log_probs.gather(1, actions[:, None]).squeeze(1)


def eos_token_ids(lm: PreTrainedModel) -> list[int]:
    """The LM's EOS ids from its generation config (or model config)."""
    eos = lm.generation_config.eos_token_id if lm.generation_config is not None else None
    eos = lm.config.eos_token_id if eos is None else eos
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
