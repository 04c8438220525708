"""KV-cached next-token evaluation across the per-step policy calls of stock SB3 rollouts.

SB3's ``collect_rollouts`` calls ``policy(obs)`` once per step for all envs together, each time with the
whole left-padded window. Between two calls a row either grew by exactly one token (the window shifted
left by one) or started a new episode. :func:`agents.lm_forward.continues` proves the first case from the ids alone;
those rows run one token through the LM on top of their cached keys/values, the others get a full
forward. The cache is kept aligned with the window (column j of the cache is column j of the
observation), so it never grows past the window.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from agents.lm_forward import Observation, accepts_logits_to_keep, continues, position_ids


class RolloutKVCache:
    """Keys/values of the last observation batch, reused when rows continue by one token.

    ``weights_version`` must change whenever the LM's weights do (the policy passes the sum of its
    parameters' in-place version counters); a changed version, batch size or window drops the cache.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.weights_version: int | None = None

    @torch.no_grad()
    def __call__(self, lm: PreTrainedModel, obs: Observation, n_actions: int, weights_version: int,
                 autocast: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``(B, n_actions)`` (float32) and last hidden states ``(B, H)`` for ``obs``."""
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
        if self.ids is None or self.ids.shape != ids.shape or self.weights_version != weights_version:
            grown = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        else:
            grown = continues(self.ids, self.mask, ids, mask)
        with autocast or contextlib.nullcontext():
            if grown.all():  # the common step: every row grew by one token; nothing to gather or scatter
                logits, hidden, layers = _extend(lm, ids, mask, self.mask, self.layers, n_actions)
            else:
                parts = []
                if grown.any():
                    rows = grown.nonzero().squeeze(1)
                    past = [(k[rows], v[rows]) for k, v in self.layers]
                    parts.append((rows, _extend(lm, ids[rows], mask[rows], self.mask[rows], past, n_actions)))
                rows = (~grown).nonzero().squeeze(1)
                parts.append((rows, _full(lm, ids[rows], mask[rows], n_actions)))
                logits, hidden, layers = _scatter(parts, len(ids))
        self.ids, self.mask, self.layers, self.weights_version = ids, mask, layers, weights_version
        return logits, hidden


Layers = list[tuple[torch.Tensor, torch.Tensor]]


def _extend(lm: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, prev_mask: torch.Tensor, past: Layers,
            n_actions: int) -> tuple[torch.Tensor, torch.Tensor, Layers]:
    """Run only the newest token of each row on top of its cached keys/values."""
    out = lm(input_ids=ids[:, -1:], attention_mask=torch.cat([prev_mask, mask[:, -1:]], 1),
             position_ids=position_ids(mask)[:, -1:], past_key_values=DynamicCache(ddp_cache_data=past),
             use_cache=True, output_hidden_states=True)
    # Drop the column that slid out of the window: the cache stays aligned with the observation.
    layers = [(layer.keys[:, :, 1:], layer.values[:, :, 1:]) for layer in out.past_key_values.layers]
    return out.logits[:, -1, :n_actions].float(), out.hidden_states[-1][:, -1], layers


def _full(lm: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, n_actions: int
          ) -> tuple[torch.Tensor, torch.Tensor, Layers]:
    """Run whole windows (new episodes, or rows the cache cannot prove) and keep their keys/values."""
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(lm) else {}
    out = lm(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True,
             output_hidden_states=True, **keep)
    layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return out.logits[:, -1, :n_actions].float(), out.hidden_states[-1][:, -1], layers


def _scatter(parts: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, Layers]]], batch: int
             ) -> tuple[torch.Tensor, torch.Tensor, Layers]:
    """Reassemble per-row results computed in groups into full-batch tensors."""
    _, (logits0, hidden0, layers0) = parts[0]
    logits = logits0.new_empty(batch, logits0.shape[-1])
    hidden = hidden0.new_empty(batch, hidden0.shape[-1])
    layers = [(k.new_empty(batch, *k.shape[1:]), v.new_empty(batch, *v.shape[1:])) for k, v in layers0]
    for rows, (part_logits, part_hidden, part_layers) in parts:
        logits[rows], hidden[rows] = part_logits, part_hidden
        for (keys, values), (k, v) in zip(layers, part_layers):
            keys[rows], values[rows] = k, v
    return logits, hidden, layers
