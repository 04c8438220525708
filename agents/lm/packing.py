"""Packed episodes: a rollout's steps as their episodes' tokens once, evaluated with one LM call per packed row.

A step's observation is a prefix of its episode's tokens, so N steps of S episodes need not be N windows: they are
the S token sequences once, and for each step the sequence it reads and how many of its tokens it sees (its logits
are those at that sequence's position ``length - 1``). This is the varlen layout of FlashAttention's
``cu_seqlens``, kept as a dict of tensors so that it travels where SB3 passes observations::

    {"input_ids":     (T,)   every sequence's tokens, one after another,
     "cu_seqlens":    (S+1,) where each sequence starts in input_ids (0 first, T last),
     "step_sequence": (N,)   which sequence each step reads,
     "step_length":   (N,)   how many of its tokens the step's observation holds}

:func:`packed_next_token_logits` lays the sequences out in rows of real tokens (first-fit, longest first, each row
as long as the longest sequence), positions restarting at 0 for each sequence. With ``position_ids`` that restart,
no ``attention_mask`` and no cache, transformers gives each sequence its own causal block
(``masking_utils.find_packed_sequence_indices``); :func:`packs_sequences` checks once per model class that the
installed transformers and model do, else every sequence gets a row of its own (padding only after its tokens,
which causal attention never lets a real token see).
"""

from __future__ import annotations

import torch

from agents.lm.forward import Observation, accepts_logits_to_keep, base_model_class, is_packed, run_lm

__all__ = ["is_packed", "pack", "packed_next_token_logits", "packs_sequences", "row_layout", "windows"]


def pack(sequences: list[torch.Tensor], step_sequence: torch.Tensor, step_length: torch.Tensor) -> Observation:
    """The packed observation of ``N`` steps that read ``sequences`` (see the module docstring)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    cu_seqlens = torch.zeros(len(sequences) + 1, dtype=torch.long)
    torch.cumsum(lengths, 0, out=cu_seqlens[1:])
    return {"input_ids": torch.cat(sequences).long(), "cu_seqlens": cu_seqlens, "step_sequence": step_sequence.long(),
            "step_length": step_length.long()}


def windows(obs: Observation, window: int, pad_token_id: int = 0) -> Observation:
    """The steps' left-padded ``{"input_ids", "attention_mask"}`` windows ``(N, window)``: TextGen-v0's own layout,
    O(N x window); for inspection and tests, not for the update."""
    ids, starts = obs["input_ids"], obs["cu_seqlens"]
    lengths = obs["step_length"]
    columns = torch.arange(window, device=ids.device)
    offset = columns[None, :] - (window - lengths)[:, None]  # index into the step's sequence; < 0 is padding
    real = offset >= 0
    source = starts[obs["step_sequence"]][:, None] + offset.clamp(min=0)
    return {"input_ids": torch.where(real, ids[source.clamp(max=len(ids) - 1)], pad_token_id), "attention_mask": real.long()}


def row_layout(lengths: list[int], many: bool) -> tuple[list[int], list[int], int]:
    """Rows for sequences of ``lengths``: (row of each, its first column, the row width). ``many``: several
    sequences per row (first fit, longest first, rows as wide as the longest sequence); else one per row."""
    width = max(lengths)
    if not many:
        return list(range(len(lengths))), [0] * len(lengths), width
    row, start, used = [0] * len(lengths), [0] * len(lengths), []
    for s in sorted(range(len(lengths)), key=lambda s: -lengths[s]):
        fit = next((r for r, u in enumerate(used) if u + lengths[s] <= width), len(used))
        if fit == len(used):
            used.append(0)
        row[s], start[s] = fit, used[fit]
        used[fit] += lengths[s]
    return row, start, width


def packed_next_token_logits(lm: torch.nn.Module, obs: Observation, n_actions: int, hidden: bool = True
                             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token logits ``(N, n_actions)`` (float32) and last hidden states ``(N, H)`` of packed steps."""
    ids, starts = obs["input_ids"].long(), obs["cu_seqlens"]
    device = ids.device
    lengths = starts.diff()
    row, start, width = row_layout(lengths.tolist(), packs_sequences(lm))
    row, start = torch.tensor(row, device=device), torch.tensor(start, device=device)
    n_rows = int(row.max()) + 1
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)  # (T,) each token's
    within = torch.arange(len(ids), device=device) - starts[sequence]
    columns = torch.arange(width, device=device)
    # Unused columns at a row's end: a block of their own (positions restart at 0), read by nobody.
    used = torch.zeros(n_rows, dtype=torch.long, device=device).index_add_(0, row, lengths)
    positions = (columns[None, :] - used[:, None]).clamp(min=0)
    row_ids = torch.zeros(n_rows, width, dtype=torch.long, device=device)
    row_ids[row[sequence], start[sequence] + within] = ids
    positions[row[sequence], start[sequence] + within] = within
    step_row = row[obs["step_sequence"]]
    step_column = start[obs["step_sequence"]] + obs["step_length"] - 1
    keep = None
    if accepts_logits_to_keep(lm):  # the head only where a step reads (not the prompt's columns, not the padding)
        keep, step_column = torch.unique(step_column, return_inverse=True)
    out = run_lm(lm, row_ids, None, positions, keep=keep, hidden=hidden)
    logits = out.logits[step_row, step_column, :n_actions].float()
    return logits, None if out.hidden is None else out.hidden[step_row, step_column]


_PACKING: dict[tuple, bool] = {}  # (model class, attention implementation) -> packs_sequences


@torch.no_grad()
def packs_sequences(lm: torch.nn.Module) -> bool:
    """Whether ``lm`` keeps packed sequences apart (positions restarting, no mask): checked once per model class
    and attention implementation by running two short sequences packed, apart, and packed under a plain causal
    mask (which lets the second attend to the first). Older transformers and some remote-code models do not."""
    key = (base_model_class(lm), getattr(getattr(lm, "config", None), "_attn_implementation", None))
    if key not in _PACKING:
        device = next(lm.parameters()).device
        vocabulary = lm.get_input_embeddings().num_embeddings
        first, second = torch.arange(1, 6) % vocabulary, torch.arange(7, 11) % vocabulary
        ids = torch.cat([first, second])[None].to(device)
        positions = torch.cat([torch.arange(5), torch.arange(4)])[None].to(device)
        packed = run_lm(lm, ids, None, positions, hidden=False).logits[0, 5:].float()
        alone = run_lm(lm, second[None].to(device), None, positions[:, 5:], hidden=False).logits[0].float()
        causal = run_lm(lm, ids, torch.ones_like(ids), positions, hidden=False).logits[0, 5:].float()
        _PACKING[key] = bool((packed - alone).abs().max() * 10 < (packed - causal).abs().max())
    return _PACKING[key]

