"""LMActorCriticPolicy: a Hugging Face causal LM as an SB3 actor-critic policy."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from agents.lm.actor_critic import MASKED_LOGIT, LMActorCritic, eos_token_ids, sample_tokens
from agents.lm.forward import check_token_observation, forward_plan, is_packed
from agents.lm.kv_cache import RolloutKVCache
from agents.sb3.nlpo import TopPMask
from agents.sb3.store_cost import check_rollout_store, rollout_buffer_being_built
from lm_gym.models import ModelRef

Masks = np.ndarray | torch.Tensor | None


class LMActorCriticPolicy(LMActorCritic, MaskableActorCriticPolicy):
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
            (the steps of one episode) from one forward of the longer row (SB3's window buffers; any order
            benefits). ``rollout_buffer_class=EpisodeRolloutBuffer`` hands the update packed episodes instead
            (:mod:`agents.lm.packing`): one forward per row of packed episodes, whatever this says.
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
        self._actor_critic_kwargs = dict(model=model, dtype=dtype, attn_implementation=attn_implementation,
                                         autocast_dtype=autocast_dtype, lora=lora, use_kv_cache=use_kv_cache,
                                         shared_critic=shared_critic)
        self.group_episodes = group_episodes
        self.top_p_mask, self.mask_update_interval = top_p_mask, mask_update_interval
        self._in_update = False
        kwargs["ortho_init"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        check_rollout_store(rollout_buffer_being_built())  # SB3's window buffers: say what they will cost, now
        self.build_actor_critic(n_actions=int(self.action_space.n), window=self.observation_space["input_ids"].shape[0],
                                **self._actor_critic_kwargs)
        self.episode_lengths = EpisodeLengthMonitor(self.kv_cache)
        # A plain attribute, not a submodule: see TopPMask.
        self.__dict__["nlpo"] = None if self.top_p_mask is None else TopPMask(
            self.lm, self.top_p_mask, self.mask_update_interval, eos_token_ids(self.lm))
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

    def _logits_and_values(self, obs: PyTorchObs, cached: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values (see :meth:`LMActorCritic.logits_and_values`); update minibatches also feed the
        buffer-order check."""
        check_token_observation(obs, self.lm)
        if cached:
            return self.logits_and_values(obs, cached=True)
        if is_packed(obs):  # an episode buffer's minibatch: one forward per packed row of episodes
            return self.logits_and_values(obs)
        plan = forward_plan(obs["input_ids"], obs["attention_mask"], share=self.group_episodes)
        if torch.is_grad_enabled() and self.group_episodes:
            self.episode_lengths.check_update(len(plan.chain), len(plan.roots))
        return self.logits_and_values(obs, plan=plan)

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
            nucleus = self.nlpo(obs, self.action_space.n, cached=cached and self.use_kv_cache, autocast=self.autocast())
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

    @torch.no_grad()
    def token_distribution(self, obs: PyTorchObs, cached: bool = False) -> torch.distributions.Categorical:
        """The policy's next-token distribution outside training: NLPO's nucleus mask included."""
        return self.token_distributions(obs, cached)[0]

    @torch.no_grad()
    def token_distributions(self, obs: PyTorchObs, cached: bool = False
                            ) -> tuple[torch.distributions.Categorical, torch.distributions.Categorical]:
        """(the distribution tokens are sampled from, NLPO's nucleus applied; the LM's plain softmax, which the
        KL to the reference is taken on), from one forward. ``cached``: through the rollout KV cache (successive
        calls on the same rows, each grown or unchanged: :func:`agents.sample_episodes`)."""
        logits, _ = self._logits_and_values(obs, cached=cached)
        plain = torch.distributions.Categorical(logits=logits)
        masks = self._masks(obs, None, cached=cached)
        if masks is None:
            return plain, plain
        masked = torch.where(masks, logits, torch.tensor(MASKED_LOGIT, dtype=logits.dtype, device=logits.device))
        return torch.distributions.Categorical(logits=masked), plain

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        # Without gradients this is SB3's bootstrap at the end of a rollout, on the observations that follow its
        # last step: the KV cache continues them, and the next rollout's first step finds them cached. SB3 also
        # bootstraps each truncated episode from its terminal observation, one row: that runs outside the cache,
        # which keeps every env's rows for the next step (a cache of one row would make all envs start over).
        return self._logits_and_values(obs, cached=not is_packed(obs) and self.kv_cache.holds_rows_of(obs))[1]


class LMTRPOPolicy(LMActorCriticPolicy):
    """:class:`LMActorCriticPolicy` with what sb3-contrib's TRPO needs by default: eager attention (its
    second-order step differentiates twice through attention) and a critic that does not move the LM (its value
    optimizer steps every parameter it is given). ``TRPO("LMPolicy", env)`` gets this one."""

    def __init__(self, *args: Any, attn_implementation: str | None = "eager", shared_critic: bool = False,
                 **kwargs: Any):
        super().__init__(*args, attn_implementation=attn_implementation, shared_critic=shared_critic, **kwargs)


class EpisodeLengthMonitor:
    """Warns once when the update runs far more LM forwards than episode-ordered minibatches would.

    Rollouts tell how long episodes are (the KV cache sees rows continue or restart). An update minibatch of at
    least four episodes' worth of rows whose rows share forwards with fewer than half as many other rows as that
    (SB3's default buffer shuffles single steps, so most of an episode's steps land in other minibatches) pays up
    to an episode length's worth of forwards per token; :class:`agents.EpisodeRolloutBuffer` removes that.
    """

    def __init__(self, rollout_cache: RolloutKVCache) -> None:
        self.rollout_cache, self.warned = rollout_cache, False

    def check_update(self, rows: int, forwards: int) -> None:
        """Called for each update minibatch: ``rows`` steps that needed ``forwards`` LM forwards."""
        restarts = self.rollout_cache.rows_restarted
        if self.warned or rows < 16 or not restarts:
            return
        episode_length = self.rollout_cache.rows_seen / restarts
        # Whole-episode minibatches give rows / forwards = their own episodes' mean length, which a small minibatch
        # (the last of an epoch, a few short episodes) can put far from the rollout's: judge large ones only.
        if episode_length >= 4 and rows >= 4 * episode_length and rows / forwards < episode_length / 2:
            self.warned = True
            warnings.warn(
                f"LMActorCriticPolicy: this update minibatch of {rows} steps needed {forwards} LM forwards, while "
                f"episodes run ~{episode_length:.0f} steps: the rollout buffer hands out single steps in random "
                "order, so most forwards serve one step. Pass rollout_buffer_class=EpisodeRolloutBuffer "
                "(from agents; MaskableEpisodeRolloutBuffer for MaskablePPO) to PPO/A2C: its minibatches are "
                "whole episodes, and one forward covers every step of an episode.", stacklevel=2)
