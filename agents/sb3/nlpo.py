"""NLPO-style action masks: keep the top-p tokens of a delayed copy of the policy (Ramamurthy et al., 2023)."""

from __future__ import annotations

import contextlib
import copy

import torch
from transformers import PreTrainedModel

from agents.lm.kv_cache import RolloutKVCache
from agents.lm.forward import Observation, next_token_logits


class TopPMask:
    """Masks every token outside the top-p nucleus of a frozen, periodically refreshed copy of the LM.

    The copy is refreshed from the policy's LM every ``update_interval`` updates, between an update and
    the next rollout, so the masks a rollout was collected with are exactly the masks its update
    recomputes. Stop tokens are always allowed, so an episode can always end.

    The copy is deliberately not a submodule of the policy: TRPO differentiates every registered parameter,
    and optimizers and checkpoints need not carry it. After ``PPO.load`` it restarts from the loaded LM.

    Args:
        lm: the policy's LM, copied now and at each refresh.
        top_p: nucleus mass to keep (0 < top_p <= 1).
        update_interval: updates between refreshes.
        always_allowed: token ids never masked (EOS).
    """

    def __init__(self, lm: PreTrainedModel, top_p: float = 0.9, update_interval: int = 5,
                 always_allowed: list[int] | tuple[int, ...] = ()):
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p_mask={top_p}: must be in (0, 1].")
        if update_interval < 1:
            raise ValueError(f"mask_update_interval={update_interval}: must be at least 1.")
        self.top_p, self.update_interval = top_p, update_interval
        self.always_allowed = torch.as_tensor(list(always_allowed), dtype=torch.long)
        self.lm = _frozen_copy(lm)
        self.cache = RolloutKVCache()
        self.updates = 0

    def refresh(self, lm: PreTrainedModel) -> None:
        self.lm.load_state_dict(lm.state_dict())
        self.cache.reset()

    def on_update_done(self, lm: PreTrainedModel) -> None:
        """Count an update; refresh the copy every ``update_interval`` of them."""
        self.updates += 1
        if self.updates % self.update_interval == 0:
            self.refresh(lm)

    @torch.no_grad()
    def __call__(self, obs: Observation, n_actions: int, cached: bool, autocast=None) -> torch.Tensor:
        """``(B, n_actions)`` bool: True for the tokens in the copy's top-p nucleus (and stop tokens)."""
        device = obs["input_ids"].device
        if self.lm.device != device:
            self.lm.to(device)
            self.cache.reset()
        with autocast or contextlib.nullcontext():
            if cached:
                logits, _ = self.cache(self.lm, obs, n_actions, weights_version=self.updates, hidden=False)
            else:
                logits, _ = next_token_logits(self.lm, obs, n_actions, hidden=False)
        probs, order = logits.float().softmax(-1).sort(-1, descending=True)
        keep_sorted = probs.cumsum(-1) - probs < self.top_p  # the smallest prefix holding top_p of the mass
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        keep[:, self.always_allowed.to(device)] = True
        return keep


def _frozen_copy(lm: PreTrainedModel) -> PreTrainedModel:
    return copy.deepcopy(lm).eval().requires_grad_(False)  # deepcopy: also right for LoRA-wrapped LMs
