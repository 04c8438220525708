"""LMActorCriticPolicy: a Hugging Face causal LM as an SB3 actor-critic policy."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from transformers import PreTrainedModel

from agents.kv_cache import RolloutKVCache
from agents.lm_forward import forward_plan, next_token_logits
from agents.nlpo import TopPMask
from agents.lora import AdaptersDisabled, add_lora, merged_copy
from lm_gym.models import ModelRef, load_causal_lm, load_frozen_lm, resolve_model, save_pretrained

Masks = np.ndarray | torch.Tensor | None


class LMActorCriticPolicy(MaskableActorCriticPolicy):
    """Actor-critic policy whose actor is a causal LM and whose critic is a linear value head on it.

    The action distribution is ``Categorical(logits=lm(obs).logits[:, -1])``: sampling an action is
    sampling the LM's next token. The value head reads the LM's last hidden state at the same position.
    One class serves stock ``PPO``, ``A2C``, sb3-contrib's ``TRPO`` and ``MaskablePPO`` (it is a
    ``MaskableActorCriticPolicy`` and takes the ``use_sde`` argument the others pass) on ``TextGen-v0``
    (its Dict observation of left-padded ``input_ids`` + ``attention_mask``)::

        PPO(LMActorCriticPolicy, env, policy_kwargs={"model": "gpt2"})

    Args:
        model: Hugging Face name or local path of the causal LM (``None``: the bundled tiny LM). Kept as
            a plain string so that ``PPO.load`` rebuilds the policy from it and then loads the weights.
        dtype: weight dtype of the LM (``"bfloat16"``; ``"float16"`` only with ``lora``, where the half
            precision base stays frozen and the adapters train in float32); logits are always cast to
            float32 and the value head stays float32.
        attn_implementation: passed to ``from_pretrained`` (``"eager"`` for TRPO's second-order gradients).
        autocast_dtype: run the LM under ``torch.autocast`` in this dtype (``"bfloat16"``); the action
            distribution is still computed from float32 logits.
        use_kv_cache: during rollouts, reuse each env's keys/values from the previous step (exact: a row
            is only continued when its ids prove it grew by one token).
        group_episodes: in the update, compute every row that is a prefix of another row of the minibatch
            (the steps of one episode) from one forward of the longer row. Any buffer order benefits;
            ``rollout_buffer_class=EpisodeRolloutBuffer`` makes it one forward per episode.
        top_p_mask: NLPO-style masking: allow only the top-p nucleus of a delayed copy of the LM
            (``None``: off). Combined with the env's ``action_masks()`` under MaskablePPO.
        mask_update_interval: updates between refreshes of that delayed copy.
        lora: train LoRA adapters only (``peft.LoraConfig`` arguments, e.g. ``{"r": 8, "lora_alpha": 16}``);
            the KL reference is then the same model with adapters disabled: one LM in memory, not two.
        shared_critic: let the value loss train the LM as well as the value head (PPO/A2C practice).
            TRPO needs ``False``: its value step runs an optimizer over every parameter, which would move
            the policy outside its trust region.
        **kwargs: the usual policy arguments; the MLP ones (``net_arch``, ``activation_fn``) have no
            effect, and ``ortho_init`` is forced off because it would overwrite pretrained weights.
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
        top_p_mask: float | None = None,
        mask_update_interval: int = 5,
        shared_critic: bool = True,
        lora: dict[str, Any] | None = None,
        use_sde: bool = False,
        **kwargs: Any,
    ):
        if use_sde:
            raise ValueError("use_sde=True: gSDE is for continuous actions; token actions are Discrete.")
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"LMActorCriticPolicy needs a Discrete action space (token ids), got {action_space}.")
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != {
            "input_ids", "attention_mask"
        }:
            raise ValueError(
                "LMActorCriticPolicy needs TextGen-v0's observation space, a Dict of 'input_ids' and "
                f"'attention_mask'; got {observation_space}."
            )
        _check_precision(dtype, autocast_dtype, lora)
        self.model_name = None if model is None else str(model)
        self.lm_dtype = dtype
        self.attn_implementation = attn_implementation
        self.autocast_dtype = autocast_dtype
        self.use_kv_cache, self.group_episodes = use_kv_cache, group_episodes
        self.top_p_mask, self.mask_update_interval = top_p_mask, mask_update_interval
        self.shared_critic = shared_critic
        self.lora = lora
        self.kv_cache = RolloutKVCache()
        self.episode_lengths = EpisodeLengthMonitor(self.kv_cache)
        self._in_update = False
        kwargs["ortho_init"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        self.lm = load_causal_lm(self.model_name, dtype=self.lm_dtype, attn_implementation=self.attn_implementation)
        lm_vocab = self.lm.get_output_embeddings().out_features
        if self.lora is not None:
            self.lm = add_lora(self.lm, self.lora)
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
        # Named "value_*" so that sb3-contrib's TRPO leaves it out of its actor step. Float32 whatever the
        # LM's dtype: it is tiny, and Adam on half-precision weights loses small updates.
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1 / (hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)
        # A plain attribute, not a submodule: see TopPMask.
        self.__dict__["nlpo"] = None if self.top_p_mask is None else TopPMask(
            self.lm, self.top_p_mask, self.mask_update_interval, _eos_ids(self.lm))
        trainable = [p for p in self.parameters() if p.requires_grad]  # with LoRA: adapters and value head
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(model=self.model_name, dtype=self.lm_dtype, attn_implementation=self.attn_implementation,
                    autocast_dtype=self.autocast_dtype, use_kv_cache=self.use_kv_cache,
                    group_episodes=self.group_episodes, top_p_mask=self.top_p_mask,
                    mask_update_interval=self.mask_update_interval, shared_critic=self.shared_critic,
                    lora=self.lora)
        return data

    def set_training_mode(self, mode: bool) -> None:
        # SB3 switches to training mode for each update (train()) and back for rollouts and predict().
        if mode:  # the update will change the weights (the version check would drop the cache anyway):
            self.kv_cache.reset()  # free its memory for the update's activations now
        elif self._in_update and self.nlpo is not None:
            self.nlpo.on_update_done(self.lm)
        self._in_update = mode
        super().set_training_mode(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.nlpo is not None:  # the delayed copy restarts from the loaded weights
            self.nlpo.refresh(self.lm)
        return result

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, self.autocast_dtype))

    def _logits_and_values(self, obs: PyTorchObs, cached: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 next-token logits ``(B, n)`` and values ``(B, 1)``.

        ``cached`` on the per-step rollout paths only: the KV cache continues each row from the last call.
        """
        n_actions = self.action_space.n
        if cached and self.use_kv_cache and not torch.is_grad_enabled():
            # In-place updates (optimizer steps, load_state_dict) bump these counters: a changed sum
            # means changed weights, and the cache is dropped.
            version = sum(p._version for p in self._lm_parameters)
            logits, hidden = self.kv_cache(self.lm, obs, n_actions, version, self._autocast())
        else:
            plan = forward_plan(obs["input_ids"], obs["attention_mask"], share=self.group_episodes)
            if torch.is_grad_enabled() and self.group_episodes:
                self.episode_lengths.check_update(len(plan.chain), len(plan.roots))
            with self._autocast():
                logits, hidden = next_token_logits(self.lm, obs, n_actions, plan)
        critic_input = hidden if self.shared_critic else hidden.detach()
        values = self.value_head(critic_input.to(self.value_head.weight.dtype)).float()
        return logits.float(), values

    def _distribution_and_values(self, obs: PyTorchObs, action_masks: Masks = None
                                 ) -> tuple[MaskableCategoricalDistribution, torch.Tensor]:
        """The (masked) next-token distribution and values, for the update and for SB3's API."""
        logits, values = self._logits_and_values(obs)
        masks = self._masks(obs, action_masks, cached=False)
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        if masks is not None:
            distribution.apply_masking(masks)
        return distribution, values

    def _masks(self, obs: PyTorchObs, action_masks: Masks, cached: bool) -> torch.Tensor | None:
        """The env's masks (MaskablePPO) and the NLPO nucleus, combined; None when neither applies."""
        masks = None if action_masks is None else torch.as_tensor(
            action_masks, dtype=torch.bool, device=self.device).reshape(-1, self.action_space.n)
        if self.nlpo is not None:
            nucleus = self.nlpo(obs, self.action_space.n, cached=cached and self.use_kv_cache, autocast=self._autocast())
            combined = nucleus if masks is None else nucleus & masks
            # Where the nucleus and the env's masks share no token, the env's masks alone decide.
            masks = combined if masks is None else torch.where(combined.any(-1, keepdim=True), combined, masks)
        return masks

    def forward(self, obs: PyTorchObs, deterministic: bool = False, action_masks: Masks = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample next tokens. Returns actions ``(B,)``, values ``(B, 1)`` and log-probs ``(B,)``."""
        logits, values = self._logits_and_values(obs, cached=True)
        actions, log_probs = sample_tokens(logits, self._masks(obs, action_masks, cached=True), deterministic)
        return actions, values, log_probs

    def _predict(self, observation: PyTorchObs, deterministic: bool = False, action_masks: Masks = None) -> torch.Tensor:
        logits, _ = self._logits_and_values(observation, cached=True)
        return sample_tokens(logits, self._masks(observation, action_masks, cached=True), deterministic)[0]

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor, action_masks: Masks = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values ``(B, 1)``, log-probs ``(B,)`` and entropies ``(B,)`` of ``actions`` under the current LM."""
        distribution, values = self._distribution_and_values(obs, action_masks)
        return values, distribution.log_prob(actions.reshape(-1)), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs, action_masks: Masks = None) -> MaskableCategoricalDistribution:
        return self._distribution_and_values(obs, action_masks)[0]

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        # Without gradients this is SB3's bootstrap at the end of a rollout, on the observations that follow its
        # last step: the KV cache continues them, and the next rollout's first step finds them cached.
        return self._logits_and_values(obs, cached=True)[1]

    def load_reference_model(self) -> nn.Module:
        """The initial LM, frozen, for KL terms: with LoRA the policy's own LM with adapters disabled,
        otherwise a copy reloaded from ``model`` onto this policy's device."""
        if self.lora is not None:
            return AdaptersDisabled(self.lm)
        return load_frozen_lm(self.model_name, self.device, dtype=self.lm_dtype,
                              attn_implementation=self.attn_implementation)

    def save_pretrained(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the LM (LoRA adapters merged in) and its tokenizer in Hugging Face format; refuses a
        non-empty directory."""
        lm = merged_copy(self.lm) if self.lora is not None else self.lm
        return save_pretrained(lm, self.model_name, path, overwrite)


HALF_PRECISION_ADVICE = ("SB3 has no loss scaling, so float16 gradients and Adam updates underflow. Use "
                         "'bfloat16' (same memory, float32's range), or LoRA (lora={...}) with dtype='float16': "
                         "the float16 base stays frozen and the adapters train in float32.")


def _check_precision(dtype: str | None, autocast_dtype: str | None, lora: dict[str, Any] | None) -> None:
    """Refuse dtypes that are not torch floating types, and float16 where it would be trained."""
    for name, value in (("dtype", dtype), ("autocast_dtype", autocast_dtype)):
        if value is not None and not (isinstance(getattr(torch, str(value), None), torch.dtype)
                                      and getattr(torch, value).is_floating_point):
            raise ValueError(f"{name}={value!r} is not a torch floating dtype; use 'bfloat16', 'float16' or 'float32'.")
    if dtype == "float16" and lora is None:
        raise ValueError(f"dtype='float16' without lora trains float16 weights: {HALF_PRECISION_ADVICE}")
    if autocast_dtype == "float16":
        raise ValueError(f"autocast_dtype='float16' trains through float16 activations: {HALF_PRECISION_ADVICE}")


def _eos_ids(lm: PreTrainedModel) -> list[int]:
    eos = lm.generation_config.eos_token_id if lm.generation_config is not None else None
    eos = lm.config.eos_token_id if eos is None else eos
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


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


class EpisodeLengthMonitor:
    """Warns once when the update runs far more LM forwards than episode-ordered minibatches would.

    Rollouts tell how long episodes are (the KV cache sees rows continue or restart). An update minibatch
    whose rows share forwards with fewer than half as many other rows as that (SB3's default buffer
    shuffles single steps, so most of an episode's steps land in other minibatches) pays up to an episode
    length's worth of forwards per token; :class:`agents.EpisodeRolloutBuffer` removes that.
    """

    def __init__(self, rollout_cache: RolloutKVCache) -> None:
        self.rollout_cache, self.warned = rollout_cache, False

    def check_update(self, rows: int, forwards: int) -> None:
        """Called for each update minibatch: ``rows`` steps that needed ``forwards`` LM forwards."""
        restarts = self.rollout_cache.rows_restarted
        if self.warned or rows < 16 or not restarts:
            return
        episode_length = self.rollout_cache.rows_seen / restarts
        if episode_length >= 4 and rows / forwards < episode_length / 2:
            self.warned = True
            warnings.warn(
                f"LMActorCriticPolicy: this update minibatch of {rows} steps needed {forwards} LM forwards, while "
                f"episodes run ~{episode_length:.0f} steps: the rollout buffer hands out single steps in random "
                "order, so most forwards serve one step. Pass rollout_buffer_class=EpisodeRolloutBuffer "
                "(from agents; MaskableEpisodeRolloutBuffer for MaskablePPO) to PPO/A2C: its minibatches are "
                "whole episodes, and one forward covers every step of an episode.", stacklevel=2)
