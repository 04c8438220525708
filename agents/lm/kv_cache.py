"""KV-cached next-token evaluation across the per-step policy calls of stock SB3 rollouts.

SB3's ``collect_rollouts`` calls ``policy(obs)`` once per step for all envs together, each time with the
whole left-padded window. Between two calls a row either grew (by one token in a single-turn step; by the
end token plus the env's reply at a multi-turn turn end) or started a new episode. :func:`agents.lm.forward.growth`
proves the first case from the ids alone: the old row is a prefix of the new one. Every step is then one LM
call: the rows that grew feed only their new tokens on top of their cached keys/values, the rows that restarted
feed their whole (new) sequence, in the same batch. A multi-turn episode costs O(its tokens), not O(turns x length).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from transformers import DynamicCache

from agents.lm.forward import LMOutput, Observation, growth, position_ids, run_lm


# A step where some rows restart runs as one call when the query columns it pads into the continuing rows
# ((width - 1) per row) are cheap next to a second LM call, else as two calls. Measured on a 2-core CPU with
# the bundled LM: a call costs about as much as 200-550 padded tokens; on a GPU a call's launch overhead
# outweighs thousands of tokens of a 124M-1B model, so the one call always wins there.
MERGE_PADDING_CPU = 256
MERGE_PADDING_ACCELERATOR = 1 << 30
# Each step copies the whole cache (the model appends with torch.cat), so dead columns cost memory traffic;
# compacting (one gather) every few steps keeps the cache within this many columns (or half the longest
# row) of the longest row's live keys, as generate()'s cache is.
COMPACT_SLACK = 16


class RolloutKVCache:
    """Keys/values of every row so far, reused when rows continue (by one token, or by a turn end and a reply).

    Layout: the model's own cache object grows by each step's columns, and ``key_mask`` ``(B, K)`` says
    which of its columns belong to each row's current sequence (attention is order-free, positions are
    given explicitly). A step where some rows restart either runs ``width`` columns for everyone (the
    restarted rows' sequences, left-padded; in the continuing rows their new tokens in the last columns, the
    others masked) or, when that padding would cost more than a second call, runs the restarted rows in a
    call of their own and writes their keys/values into their rows (see ``MERGE_PADDING_*``). When dead
    columns pile up, each row's live keys are gathered back into the width of the longest row. No step
    rebuilds or re-gathers the cache except that compaction.

    ``weights_version`` must change whenever the LM's weights do (the policy passes the sum of its
    parameters' in-place version counters); a changed version, batch size or window drops the cache.
    """

    def __init__(self) -> None:
        self.rows_seen = 0  # rows evaluated, and how many of them ran in full (new episodes, or the first
        self.rows_restarted = 0  # step after a weight change): their ratio ~ the episode length
        self.reset()

    def reset(self) -> None:
        """Drop the cached keys/values (the row counters keep counting)."""
        self.ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.cache: Any = None
        self.key_mask: torch.Tensor | None = None
        self.weights_version: int | None = None
        self.logits: torch.Tensor | None = None  # the last call's results, returned again for the same obs
        self.hidden: torch.Tensor | None = None
        self.hidden_kept = False

    def holds_rows_of(self, obs: Observation) -> bool:
        """Whether ``obs`` has the cache's batch shape (or the cache is empty): a call with another batch drops
        the cache, so a one-off call on other rows (SB3's bootstrap of one truncated episode) should not use it."""
        return self.ids is None or self.ids.shape == obs["input_ids"].shape

    @torch.no_grad()
    def __call__(self, lm: torch.nn.Module, obs: Observation, n_actions: int, weights_version: int,
                 autocast: Any = None, hidden: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token logits ``(B, n_actions)`` (float32) and last hidden states ``(B, H)`` for ``obs``."""
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
        batch, window = ids.shape
        same_rows = self.ids is not None and self.ids.shape == ids.shape and self.weights_version == weights_version
        if same_rows and torch.equal(ids, self.ids) and torch.equal(mask, self.mask) and self.hidden_kept >= hidden:
            return self.logits, self.hidden  # the same observations again (SB3 bootstraps, then steps, on one obs)
        held = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        if not same_rows:
            # A plain DynamicCache: one full-attention layer per model layer, whatever the model's config.
            self.cache, self.key_mask = DynamicCache(), mask.new_zeros(batch, 0)
            added = torch.zeros(batch, dtype=torch.long, device=ids.device)
        else:
            added = growth(self.ids, self.mask, ids, mask)
            if not bool((added == 1).all()):
                # Rows that did not change (an episode that ended while others run on): their last results stand.
                held = (added == 0) & (ids == self.ids).all(-1) & (mask == self.mask).all(-1)
        if ((added == 1) | held).all():  # the common step: one new token per row (none in held rows)
            out = self._run(lm, ids[:, -1:], self.key_mask, mask[:, -1:] * ~held[:, None],
                            mask.sum(-1, keepdim=True) - 1, autocast, hidden)
        else:
            grown = added > 0
            # Each row runs its new tokens (all of them where it restarted) in the last columns of one call.
            columns = torch.where(grown, added, torch.where(held, 0, mask.sum(-1)))
            width = int(columns.max())
            restarted = ~grown & ~held
            n_restarted = int(restarted.sum())
            self.rows_restarted += n_restarted
            padding = int((width - columns).sum())  # query columns the call would waste
            limit = MERGE_PADDING_CPU if ids.device.type == "cpu" else MERGE_PADDING_ACCELERATOR
            one_token_growth = bool((added[grown] == 1).all())
            if padding <= limit or not one_token_growth or self.key_mask.shape[1] + 1 < width:
                out = self._merged_step(lm, ids, mask, grown | held, columns, width, autocast, hidden)
            else:
                out = self._split_step(lm, ids, mask, grown, restarted, width, autocast, hidden)
        if held.any():
            out.logits[held, -1:] = self.logits[held, None].to(out.logits.dtype)
            if hidden and out.hidden is not None and self.hidden is not None:
                out.hidden[held, -1:] = self.hidden[held, None].to(out.hidden.dtype)
        self.ids, self.mask, self.weights_version = ids, mask, weights_version
        self.logits = out.logits[:, -1, :n_actions].float()
        self.hidden, self.hidden_kept = (None, False) if out.hidden is None else (out.hidden[:, -1], True)
        longest = int(mask.sum(-1).max())  # live keys of the longest row: what the cache must hold
        if self.key_mask.shape[1] > longest + max(COMPACT_SLACK, longest // 2):
            self._compact(longest)
        self.rows_seen += batch
        return self.logits, self.hidden

    def _run(self, lm: torch.nn.Module, step_ids: torch.Tensor, key_mask: torch.Tensor, step_mask: torch.Tensor,
             positions: torch.Tensor, autocast: Any, hidden: bool) -> LMOutput:
        """One LM call of ``step_ids`` on top of the cache; the cache and ``key_mask`` grow by its columns."""
        self.key_mask = torch.cat([key_mask, step_mask], 1)
        # Every key live (equal-length rows, nothing restarted): no mask, so attention takes its causal kernel, as
        # generate() does for unpadded prompts, instead of the masked one (at 4k keys: most of a decode step).
        attend = None if bool(self.key_mask.all()) else self.key_mask
        with autocast or contextlib.nullcontext():
            out = run_lm(lm, step_ids, attend, positions, keep=1, past=self.cache, use_cache=True, hidden=hidden)
        self.cache = out.cache
        return out

    def _merged_step(self, lm: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, kept: torch.Tensor,
                     columns: torch.Tensor, width: int, autocast: Any, hidden: bool) -> LMOutput:
        """Every row runs its last ``columns[b]`` columns (a continuing row its new tokens, a restarted row its whole
        sequence, a held row none) inside one call of ``width`` columns; the columns before them are masked.
        ``kept``: the rows whose cached keys stay theirs."""
        step_mask = mask[:, -width:] * (torch.arange(width, device=ids.device)[None, :] >= width - columns[:, None])
        key_mask = self.key_mask * kept[:, None]  # a restarted row's old keys are not its own any more
        return self._run(lm, ids[:, -width:], key_mask, step_mask, position_ids(mask)[:, -width:], autocast, hidden)

    def _split_step(self, lm: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, grown: torch.Tensor,
                    restarted: torch.Tensor, width: int, autocast: Any, hidden: bool) -> LMOutput:
        """Every row adds one column (its one new token; a masked placeholder in restarted and held rows), then the
        restarted rows run on their own and their keys/values overwrite the last ``width`` columns of their rows: two
        calls, no padded columns."""
        out = self._run(lm, ids[:, -1:], self.key_mask * ~restarted[:, None], mask[:, -1:] * grown[:, None],
                        mask.sum(-1, keepdim=True) - 1, autocast, hidden)
        rows = restarted.nonzero().squeeze(1)
        row_mask = mask[rows, -width:]
        with autocast or contextlib.nullcontext():
            fresh = run_lm(lm, ids[rows, -width:], row_mask, position_ids(row_mask), keep=1, use_cache=True,
                           hidden=hidden)
        for layer, new in zip(self.cache.layers, fresh.cache.layers):
            layer.keys[rows, :, -width:], layer.values[rows, :, -width:] = new.keys, new.values
        self.key_mask[rows] = 0
        self.key_mask[rows, -width:] = row_mask
        out.logits[rows, -1:] = fresh.logits[:, -1:]
        if hidden:
            out.hidden[rows, -1:] = fresh.hidden[:, -1:]
        return out

    def _compact(self, width: int) -> None:
        """Gather each row's live keys/values (at most ``width``, in order) into the last columns of a
        ``width``-wide cache; the columns before them point at a masked column and stay masked."""
        key_mask = self.key_mask
        live = key_mask.sum(-1, keepdim=True)
        live_first = torch.sort(1 - key_mask, dim=1, stable=True).indices  # live columns first, in order
        rank = torch.arange(width, device=key_mask.device) - (width - live)  # (B, width): which live column
        source = torch.where(rank >= 0, live_first.gather(1, rank.clamp(min=0)), live_first[:, -1:])
        for layer in self.cache.layers:
            index = source[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)
        self.key_mask = (rank >= 0).to(key_mask.dtype)
