"""How left-padded observations become LM calls: positions, continuation proofs, one forward per chain."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from transformers import PreTrainedModel

Observation = dict[str, torch.Tensor]


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, as ``generate()`` computes them for left padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def continues(prev_ids: torch.Tensor, prev_mask: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: row b of ``ids`` is row b of ``prev_ids`` plus one new token.

    All ``(B, W)``, left-padded. True iff the window shifted left by one over a padding column and a real
    token came in at the end. Then ``prev``'s next-token logits are ``ids``'s logits one column earlier
    (same tokens, same positions, causal attention), so one forward serves both.
    """
    return (
        (prev_mask[:, 0] == 0)
        & (mask[:, -1] == 1)
        & (ids[:, :-1] == prev_ids[:, 1:]).all(-1)
        & (mask[:, :-1] == prev_mask[:, 1:]).all(-1)
    )


def accepts_logits_to_keep(lm: PreTrainedModel) -> bool:
    """Most causal LMs can skip the vocabulary projection for positions nobody reads.

    Wrappers (peft's ``PeftModel``, :class:`agents.lora.AdaptersDisabled`) pass the argument through to
    the model they wrap, so the wrapped model's signature decides.
    """
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return _forward_takes_logits_to_keep(type(base))


@functools.cache
def _forward_takes_logits_to_keep(lm_class: type[PreTrainedModel]) -> bool:
    return "logits_to_keep" in inspect.signature(lm_class.forward).parameters


def next_token_logits(
    lm: PreTrainedModel, obs: Observation, n_actions: int, group: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits and last hidden states of a batch of observations.

    With ``group=True``, runs of consecutive rows where each row continues the previous one by a token
    (the steps of one episode, in order, as :class:`agents.EpisodeRolloutBuffer` yields them) are
    computed by one forward of the run's last row: an episode of L steps costs one sequence, not L.
    Rows in any other order fall back to one forward each; results are equal either way.

    Args:
        lm: a causal LM.
        obs: ``{"input_ids": (N, W), "attention_mask": (N, W)}``, left-padded, newest token at ``W - 1``.
        n_actions: the env's vocabulary size; logits beyond it (padded embedding rows) are dropped.

    Returns:
        logits ``(N, n_actions)`` in float32 and hidden states ``(N, hidden_size)``.
    """
    ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
    n, window = ids.shape
    is_last = torch.ones(n, dtype=torch.bool, device=ids.device)
    if group and n > 1:
        is_last[:-1] = ~continues(ids[:-1], mask[:-1], ids[1:], mask[1:])
    last_rows = is_last.nonzero().squeeze(1)
    rows = torch.arange(n, device=ids.device)
    chain = torch.searchsorted(last_rows, rows)  # which forwarded row holds each row's logits
    offset = last_rows[chain] - rows  # ... and how many columns before its end
    kwargs: dict[str, Any] = {}
    if accepts_logits_to_keep(lm):
        kwargs["logits_to_keep"] = int(offset.max()) + 1 if n > 1 else 1
    out = lm(input_ids=ids[last_rows], attention_mask=mask[last_rows], position_ids=position_ids(mask[last_rows]),
             output_hidden_states=True, use_cache=False, **kwargs)
    logits = out.logits[chain, -1 - offset, :n_actions].float()
    hidden = out.hidden_states[-1][chain, window - 1 - offset]
    return logits, hidden
