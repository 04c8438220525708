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
        batch, window = ids.shape
        if self.ids is None or self.ids.shape != ids.shape or self.weights_version != weights_version:
            grown = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        else:
            grown = continues(self.ids, self.mask, ids, mask)
        logits = hidden = None
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []

        def put(rows: torch.Tensor, out, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
            nonlocal logits, hidden, layers
            row_logits, row_hidden = out.logits[:, -1, :n_actions].float(), out.hidden_states[-1][:, -1]
            if logits is None:
                logits = row_logits.new_empty(batch, n_actions)
                hidden = row_hidden.new_empty(batch, row_hidden.shape[-1])
                layers = [(k.new_empty(batch, *k.shape[1:]), v.new_empty(batch, *v.shape[1:])) for k, v in kv]
            logits[rows], hidden[rows] = row_logits, row_hidden
            for (keys, values), (k, v) in zip(layers, kv):
                keys[rows], values[rows] = k, v

        keep = {"logits_to_keep": 1} if accepts_logits_to_keep(type(lm)) else {}
        with autocast or contextlib.nullcontext():
            if grown.any():
                rows = grown.nonzero().squeeze(1)
                past = DynamicCache(ddp_cache_data=[(k[rows], v[rows]) for k, v in self.layers])
                out = lm(input_ids=ids[rows, -1:], attention_mask=torch.cat([self.mask[rows], mask[rows, -1:]], 1),
                         position_ids=position_ids(mask[rows])[:, -1:], past_key_values=past, use_cache=True,
                         output_hidden_states=True)
                # Drop the column that slid out of the window: the cache stays aligned with it.
                put(rows, out, [(layer.keys[:, :, 1:], layer.values[:, :, 1:]) for layer in out.past_key_values.layers])
            if not grown.all():
                rows = (~grown).nonzero().squeeze(1)
                out = lm(input_ids=ids[rows], attention_mask=mask[rows], position_ids=position_ids(mask[rows]),
                         use_cache=True, output_hidden_states=True, **keep)
                put(rows, out, [(layer.keys, layer.values) for layer in out.past_key_values.layers])
        self.ids, self.mask, self.layers, self.weights_version = ids, mask, layers, weights_version
        return logits, hidden
